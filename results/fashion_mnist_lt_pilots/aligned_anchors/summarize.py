"""The aligned-anchor pilot's table: each run's benchmark against SimCLR of the same continuation seed.

cd results/fashion_mnist_lt_pilots/aligned_anchors && python summarize.py > summary.md
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PILOTS = Path("results/fashion_mnist_lt_pilots")
# (label, continuation seed, benchmark.json relative to the repository)
RUNS = [
    ("SimCLR", 0, PILOTS / "continue160/runs/simclr_seed0/benchmark.json"),
    ("GH, estimated prior", 0, PILOTS / "continue160/runs/simclr_gh_seed0/benchmark.json"),
    ("GH, known prior", 0, PILOTS / "continue160/runs/simclr_gh_known_seed0/benchmark.json"),
    ("GH aligned, estimated prior", 0, PILOTS / "aligned_anchors/runs/simclr_gh_seed0/benchmark.json"),
    ("GH aligned, known prior", 0, PILOTS / "aligned_anchors/runs/simclr_gh_known_seed0/benchmark.json"),
    (
        "control: bank only, known prior",
        0,
        PILOTS / "aligned_anchors/runs/control_simclr_gh_known_seed0/benchmark.json",
    ),
    ("SimCLR", 1, PILOTS / "continue160_order0/runs/simclr_seed1/benchmark.json"),
    ("GH, estimated prior", 1, PILOTS / "continue160_order0/runs/simclr_gh_seed1/benchmark.json"),
    ("GH, known prior", 1, PILOTS / "continue160_order0/runs/simclr_gh_known_seed1/benchmark.json"),
    (
        "GH aligned, known prior",
        1,
        PILOTS / "aligned_anchors/runs/order0_simclr_gh_known_seed1/benchmark.json",
    ),
]
COLUMNS = [  # (header, protocol or "geometry", key)
    ("linear", "linear", "accuracy"),
    ("Many", "linear", "many"),
    ("Few", "linear", "few"),
    ("kNN", "knn", "accuracy"),
    ("Many (kNN)", "knn", "many"),
    ("Few (kNN)", "knn", "few"),
    ("NCM", "geometry", "accuracy"),
]


def figures(path: Path) -> list[float]:
    report = json.loads((ROOT / path).read_text())
    (result,) = report["results"].values()
    (geometry,) = report["geometry"].values()
    values = []
    for _, protocol, key in COLUMNS:
        if protocol == "geometry":
            values.append(100 * geometry["overall"]["centroid_accuracy"])
        else:
            values.append(100 * result[protocol]["metrics"][key])
    return values


def main() -> None:
    found = [(label, seed, figures(path)) for label, seed, path in RUNS if (ROOT / path).is_file()]
    header = "| seed | run | " + " | ".join(name for name, _, _ in COLUMNS) + " |"
    print(header + "\n|---|---|" + "---:|" * len(COLUMNS))
    for label, seed, values in found:
        print(f"| {seed} | {label} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    print("\nMinus SimCLR of the same continuation seed, in points:\n")
    print(header + "\n|---|---|" + "---:|" * len(COLUMNS))
    simclr = {seed: values for label, seed, values in found if label == "SimCLR"}
    for label, seed, values in found:
        if label != "SimCLR" and seed in simclr:
            diffs = [v - s for v, s in zip(values, simclr[seed], strict=True)]
            print(f"| {seed} | {label} | " + " | ".join(f"{d:+.2f}" for d in diffs) + " |")


if __name__ == "__main__":
    main()
