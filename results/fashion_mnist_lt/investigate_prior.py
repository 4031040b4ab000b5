"""Anchor/class agreement of the final model of each run of the experiment, GH and not.

Each run's latest checkpoint scores its whole long-tailed split once (eval transform, no
gradient), so the figures describe the trained model, not the lagging score bank; see
`gh_hf.training.investigation`. The SimCLR runs are the baseline: their projector never trained
towards the anchors, so their partition shows what GH changed. Run from the repository root after
`make experiment`:
    python results/fashion_mnist_lt/investigate_prior.py [--runs_dir outputs/experiment]
It writes results/fashion_mnist_lt/prior_investigation.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from gh_hf.training.investigation import investigate_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs_dir", default="outputs/experiment", help="The experiment's --work_dir.")
    parser.add_argument("--output", default="results/fashion_mnist_lt/prior_investigation.json")
    args = parser.parse_args()
    runs = sorted(
        (run for run in Path(args.runs_dir).iterdir() if re.search(r"_seed\d+$", run.name)),
        key=lambda run: (int(run.name.rsplit("_seed", 1)[1]), run.name),
    )
    finished = [
        run for run in runs if (run / "encoder" / "run_info.json").exists()
    ]  # its last checkpoint is the end
    results = {run.name: investigate_run(run) for run in finished}
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print("| Run | TV(occupancy, classes) | anchor purity | anchors owned: Many / Medium / Few "
          "| classes owning an anchor: Many / Medium / Few |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for name, report in results.items():
        anchors, classes = report["anchors_owned_by_group"], report["classes_owning_by_group"]
        print(
            f"| {name} | {report['estimate_tv_to_classes']:.3f} | {report['anchor_purity_mean']:.3f} "
            f"| {anchors['many']} / {anchors['medium']} / {anchors['few']} "
            f"| {classes['many']} / {classes['medium']} / {classes['few']} |"
        )


if __name__ == "__main__":
    main()
