"""Anchor/class agreement of the final model of each GH run of the experiment (issue 8 investigation).

Each run's latest checkpoint scores its whole long-tailed split once (eval transform, no
gradient), so the figures describe the trained model, not the lagging score bank; see
`gh_hf.training.investigation`. Run from the repository root after `make experiment`:
    python results/fashion_mnist_lt/investigate_prior.py
"""

from __future__ import annotations

import json
from pathlib import Path

from gh_hf.training.investigation import investigate_run

RUNS = Path("outputs/experiment")
OUTPUT = Path("results/fashion_mnist_lt/prior_investigation.json")


def main() -> None:
    results = {
        run.name: investigate_run(run)
        for run in sorted(RUNS.glob("*_gh_seed*"))
        if (run / "checkpoints").is_dir()
    }
    print(json.dumps(results, indent=1))
    OUTPUT.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
