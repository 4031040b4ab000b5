"""Anchor/class agreement of the final score bank of the GH runs (issue 8 investigation).

Run from the repository root after `make experiment`:
    python results/fashion_mnist_lt/investigate_prior.py
"""
import glob, json, os
import numpy as np, torch
from gh_hf.training import parse_pretrain_args
from gh_hf.training.data import load_long_tailed_train

out = {}
for arm, seed in [(arm, seed) for arm in ("simclr_gh", "focal_gh", "sdclr_gh", "bcl_gh") for seed in (0, 1)]:
    run = f"outputs/experiment/{arm}_seed{seed}"
    if not os.path.isdir(f"{run}/checkpoints"):
        continue
    ckpt = sorted(glob.glob(f"{run}/checkpoints/step_*"))[-1]
    bank = torch.load(f"{ckpt}/custom_checkpoint_1.pkl", weights_only=True)
    data, _, train = parse_pretrain_args(["--preset", "fashion_mnist_lt", "--seed", str(seed)])
    labels = np.asarray(load_long_tailed_train(data, seed)["label"])
    anchors = bank["scores"].argmax(1).numpy()
    seen = bank["seen"].numpy()
    K = bank["scores"].shape[1]
    table = np.zeros((10, K), dtype=int)
    np.add.at(table, (labels[seen], anchors[seen]), 1)
    purity = table.max(0).sum() / table.sum()          # each anchor's majority class
    anchors_per_class = [int((table[c] > 0.1 * table[c].sum()).sum()) for c in range(10)]
    dominant = [int(table[:, k].argmax()) for k in range(K)]
    true = np.bincount(labels, minlength=10) / len(labels)
    prior = table.sum(0) / table.sum()
    ent = lambda p: float(-(p[p > 0] * np.log(p[p > 0])).sum())
    out[f"{arm}_seed{seed}"] = {"anchor_purity": round(float(purity), 3), "anchors_holding_10pct_of_class": anchors_per_class,
                 "majority_class_of_anchor": dominant, "prior_sorted": sorted(np.round(prior, 3).tolist(), reverse=True),
                 "true_sorted": np.round(true, 3).tolist(), "prior_entropy": round(ent(prior), 3), "true_entropy": round(ent(true), 3)}
print(json.dumps(out, indent=1))
json.dump(out, open("results/fashion_mnist_lt/prior_investigation.json", "w"), indent=1)
