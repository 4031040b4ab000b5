"""Do the classes that share an anchor move together in the backbone? Seed 0, 160 epochs, one EPYC.

For each GH run, each class's main anchor (where most of its split's images land, from the final
model: `prior_investigation.json`, written by results/fashion_mnist_lt/investigate_prior.py), and
the cosine between every two class means of the backbone's L2-normalised train features (the
benchmark's feature cache), against SimCLR's. Run from the repository root after the runs:
    python results/fashion_mnist_lt/investigate_prior.py --runs_dir outputs/pilots/epochs160 \
        --output results/fashion_mnist_lt_pilots/epochs160_epyc/prior_investigation.json
    python results/fashion_mnist_lt_pilots/epochs160_epyc/shared_anchors.py
It prints, per GH run, the mean change of the class-mean cosine over the pairs of classes that share
a main anchor and over the other pairs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel

import gh_hf  # noqa: F401  (registers GHModel)
from gh_hf.data import load_image_dataset
from gh_hf.evaluation import class_means, encoder_features

HERE = Path(__file__).resolve().parent


def class_mean_cosines(encoder: str, data: tuple, cache_dir: str) -> torch.Tensor:
    """(C, C) cosines between the class means of the encoder's unit train features."""
    (features, labels), _ = encoder_features(AutoModel.from_pretrained(encoder), *data, cache_dir=cache_dir)
    directions = F.normalize(class_means(features, labels, int(labels.max()) + 1), dim=1)
    return directions @ directions.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs_dir", default="outputs/pilots/epochs160")
    parser.add_argument("--investigation", default=str(HERE / "prior_investigation.json"))
    args = parser.parse_args()
    investigation = json.loads(Path(args.investigation).read_text())
    cache = f"{args.runs_dir}/feature_cache"
    data = tuple(load_image_dataset("fashion_mnist", split=split) for split in ("train", "test"))
    base = class_mean_cosines(f"{args.runs_dir}/simclr_seed0/encoder", data, cache)
    for name, report in investigation.items():
        if "_gh" not in name:
            continue
        table = torch.tensor(report["images_per_class_and_anchor"])  # (C, K)
        main_anchor = table.argmax(dim=1)
        change = class_mean_cosines(f"{args.runs_dir}/{name}/encoder", data, cache) - base
        shared, other = [], []
        for a in range(len(main_anchor)):
            for b in range(a + 1, len(main_anchor)):
                (shared if main_anchor[a] == main_anchor[b] else other).append(float(change[a, b]))
        groups = {}
        for c, anchor in enumerate(main_anchor.tolist()):
            groups.setdefault(anchor, []).append(c)
        print(f"{name}: classes by main anchor {sorted(groups.values())}; class-mean cosine change against "
              f"SimCLR: {sum(shared) / max(len(shared), 1):+.3f} over {len(shared)} pairs sharing an anchor, "
              f"{sum(other) / max(len(other), 1):+.3f} over the other {len(other)}")  # fmt: skip


if __name__ == "__main__":
    main()
