"""Sinkhorn on real batches: the 160-epoch GH pilot's last 290 steps, plain (as the pilot ran them
at gh_hf 47acf11) against over-relaxed (resumed from the pilot's step-8990 checkpoint).

    python results/fashion_mnist_lt_pilots/epochs160/overrelaxed_resume/compare.py

The resumed run (the checkpoint is not in the repository; `outputs/` of the pilot's worktree):
    accelerate launch --num_processes 1 --num_cpu_threads_per_process 2 scripts/pretrain.py
        --preset fashion_mnist_lt --lr_schedule two_stage --class_order permuted --use_gh true
        --class_prior estimated --seed 0 --num_epochs 160 --gh_warmup_epochs 80
        --output_dir RUN --resume_from_checkpoint latest --knn_at_end false
        --checkpoint_every_epochs 0     (RUN/checkpoints/ holding the pilot's step_00008990)
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _steps(path: Path) -> dict[int, dict]:
    rows = (json.loads(line) for line in path.read_text().splitlines())
    return {row["step"]: row for row in rows if "sinkhorn_iterations" in row}


def main() -> None:
    plain = _steps(HERE.parent / "runs" / "simclr_gh_seed0" / "log.jsonl")
    relaxed = _steps(HERE / "log.jsonl")
    steps = sorted(set(plain) & set(relaxed))
    for name, log in (("plain", plain), ("over-relaxed", relaxed)):
        counts = [log[step]["sinkhorn_iterations"] for step in steps]
        print(f"{name:>12}: Sinkhorn iterations min {min(counts)}, median {statistics.median(counts)}, "
              f"max {max(counts)} over {len(steps)} logged steps ({steps[0]}-{steps[-1]})")  # fmt: skip
    for key in ("loss", "gh_loss"):
        gap = max(abs(plain[step][key] - relaxed[step][key]) for step in steps)
        print(f"largest |{key} plain - over-relaxed| at the same step: {gap:.4f}")


if __name__ == "__main__":
    main()
