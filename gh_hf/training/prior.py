"""The anchor prior pi: the score bank's memory, the known-prior option and what to log about pi.

DESIGN.md section 2 "Prior pi" is the reference. Three rules live here and nowhere else:

- **Bank momentum** (`auto_bank_momentum`): beta_stage = beta_paper ^ (paper stage epochs / stage
  epochs), per stage, so any schedule keeps the paper's *relative* memory.
- **Known prior** (`match_prior_to_anchors`): class frequencies go to anchors by rank of anchor
  occupancy, so no label is read.
- **Diagnostics** (`prior_diagnostics`): what a refresh logs, from the score bank's argmax.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gh_hf.training.score_bank import ScoreBank

# The paper's CIFAR schedule: 500 SSL warm-up epochs with bank momentum 0.9, then 500 GH epochs with 0.999.
PAPER_WARMUP_EPOCHS = 500
PAPER_WARMUP_MOMENTUM = 0.9
PAPER_GH_EPOCHS = 500
PAPER_GH_MOMENTUM = 0.999
CLASS_PRIOR_MODES = ("estimated", "uniform")


@dataclass(frozen=True)
class BankMomenta:
    """The score bank's momentum in the SSL warm-up and in the GH stage of one run."""

    warmup: float
    gh: float

    def at(self, epoch: float, gh_warmup_epochs: int) -> float:
        """The momentum of a bank update made at (fractional) `epoch`."""
        return self.warmup if epoch < gh_warmup_epochs else self.gh


def auto_bank_momentum(paper_momentum: float, paper_epochs: int, stage_epochs: int) -> float:
    """beta_paper ^ (paper_epochs / stage_epochs): the paper's relative memory on a stage of any length.

    A sample is seen once per epoch, so a bank with momentum beta forgets with a horizon of
    1 / (1 - beta) epochs; scaling the exponent by the stage length keeps that horizon at the same
    share of the stage. A stage of 0 epochs never updates the bank: its momentum is 0.0 (the limit
    of the rule, and the value that keeps only the latest score should it ever be used).

    Args:
        paper_momentum: The paper's momentum for the stage, in [0, 1).
        paper_epochs: The stage's length in the paper's schedule (> 0).
        stage_epochs: The stage's length in this run (>= 0).

    Returns:
        The momentum, in [0, 1); exactly `paper_momentum` when `stage_epochs == paper_epochs`.
    """
    if stage_epochs < 0:
        raise ValueError(f"stage_epochs={stage_epochs} is invalid: must be >= 0.")
    if stage_epochs == 0:
        return 0.0
    return paper_momentum ** (paper_epochs / stage_epochs)


def resolve_bank_momenta(
    warmup_setting: str | float, gh_setting: str | float, gh_warmup_epochs: int, num_epochs: int
) -> BankMomenta:
    """The run's two bank momenta: "auto" follows `auto_bank_momentum`, a number is kept as it is.

    Args:
        warmup_setting: `--bank_momentum_warmup`, "auto" or a float.
        gh_setting: `--bank_momentum`, "auto" or a float.
        gh_warmup_epochs: Epochs of the SSL warm-up (the bank's first stage).
        num_epochs: Epochs of the whole run; the GH stage is what follows the warm-up.
    """
    warmup_epochs = min(gh_warmup_epochs, num_epochs)
    gh_epochs = max(num_epochs - gh_warmup_epochs, 0)
    warmup = (
        auto_bank_momentum(PAPER_WARMUP_MOMENTUM, PAPER_WARMUP_EPOCHS, warmup_epochs)
        if warmup_setting == "auto"
        else float(warmup_setting)
    )
    gh = (
        auto_bank_momentum(PAPER_GH_MOMENTUM, PAPER_GH_EPOCHS, gh_epochs)
        if gh_setting == "auto"
        else float(gh_setting)
    )
    return BankMomenta(warmup=warmup, gh=gh)


# ---- the known prior ---------------------------------------------------------------------------
def resolve_class_prior(setting: str, num_anchors: int) -> str | torch.Tensor:
    """`--class_prior`: "estimated" / "uniform" as they are, else FILE's frequencies, normalised, descending.

    FILE is a JSON list of K class frequencies (counts or shares, any order). Called before any
    data is loaded, so a bad file fails the run at once.

    Raises:
        ValueError: naming `--class_prior`, the value and what is allowed, when FILE is missing, is
            not a JSON list of numbers, has a length other than `num_anchors`, or holds a value that
            is not finite and > 0.
    """
    if setting in CLASS_PRIOR_MODES:
        return setting
    prior = torch.tensor(_read_class_frequencies(setting, num_anchors), dtype=torch.float64)
    return (prior / prior.sum()).sort(descending=True).values.float()


def _read_class_frequencies(setting: str, num_anchors: int) -> list[float]:
    def invalid(reason: str) -> ValueError:
        allowed = (
            f"'estimated', 'uniform' or a JSON file holding a list of {num_anchors} (= num_anchors) "
            "finite class frequencies > 0"
        )
        return ValueError(f"--class_prior={setting!r} is invalid: {reason}; allowed: {allowed}.")

    path = Path(setting)
    if not path.is_file():
        raise invalid("no such file")
    try:
        masses = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise invalid(f"not JSON ({error})") from None
    if not isinstance(masses, list) or not all(
        isinstance(m, (int, float)) and not isinstance(m, bool) for m in masses
    ):
        raise invalid("not a JSON list of numbers")
    if len(masses) != num_anchors:
        raise invalid(f"it holds {len(masses)} frequencies")
    bad = [m for m in masses if not (math.isfinite(m) and m > 0)]
    if bad:
        raise invalid(f"it holds {bad[0]!r}")
    return masses


def anchors_by_occupancy(occupancy: torch.Tensor) -> torch.Tensor:
    """Anchor ids, most occupied first; ties go to the lower anchor id."""
    return torch.sort(occupancy, descending=True, stable=True).indices


def match_prior_to_anchors(masses: torch.Tensor, occupancy: torch.Tensor) -> torch.Tensor:
    """pi over anchors: the r-th largest mass goes to the r-th most occupied anchor.

    Args:
        masses: (K,) known class frequencies, any order.
        occupancy: (K,) samples whose bank argmax is each anchor.

    Returns:
        (K,) the prior, on `occupancy`'s device.
    """
    if masses.shape != occupancy.shape:
        raise ValueError(
            f"masses {tuple(masses.shape)} and occupancy {tuple(occupancy.shape)} must have one shape."
        )
    prior = torch.empty_like(masses, device=occupancy.device)
    prior[anchors_by_occupancy(occupancy)] = masses.to(occupancy.device).sort(descending=True).values
    return prior


def refreshed_prior(bank: ScoreBank, class_prior: str | torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """pi at a refresh, (K,) on the bank's device.

    Args:
        bank: The score bank.
        class_prior: "estimated" (the bank's argmax histogram + `floor`), "uniform", or (K,) known
            class frequencies, matched to anchors by the bank's occupancy (`match_prior_to_anchors`).
        floor: Added to every anchor's count of the estimate.
    """
    if isinstance(class_prior, torch.Tensor):
        return match_prior_to_anchors(class_prior, bank.occupancy())
    if class_prior == "uniform":
        num_anchors = bank.scores.shape[1]
        return torch.full((num_anchors,), 1.0 / num_anchors, device=bank.scores.device)
    if class_prior == "estimated":
        return bank.estimate_prior(floor)
    raise ValueError(
        f"class_prior={class_prior!r} is invalid: allowed: {CLASS_PRIOR_MODES} or a tensor of masses."
    )


# ---- diagnostics -------------------------------------------------------------------------------
def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """0.5 * sum |p - q|; the shorter vector is padded with zeros (K anchors vs C classes)."""
    size = max(len(p), len(q))
    p = torch.nn.functional.pad(p.double().cpu(), (0, size - len(p)))
    q = torch.nn.functional.pad(q.double().cpu(), (0, size - len(q)))
    return float(0.5 * (p - q).abs().sum())


def prior_entropy(prior: torch.Tensor) -> float:
    """Shannon entropy (nats) of a distribution; log K for a uniform prior."""
    positive = prior[prior > 0].double()
    return float(-(positive * positive.log()).sum())


def anchor_class_counts(
    assignments: torch.Tensor, labels: torch.Tensor, num_anchors: int, num_classes: int | None = None
) -> torch.Tensor:
    """(K, C) how many samples of each class have each anchor, on `assignments`' device.

    Args:
        assignments: (N,) anchor id of each sample.
        labels: (N,) class id of each sample (>= 0).
        num_anchors: K.
        num_classes: C; by default the largest label + 1 (give it when tables are summed over shards).
    """
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if len(labels) else 1
    counts = torch.zeros(num_anchors, num_classes, dtype=torch.long, device=assignments.device)
    labels = labels.to(assignments.device).long()
    counts.index_put_((assignments.long(), labels), torch.ones_like(labels), accumulate=True)
    return counts


def purity_of_counts(counts: torch.Tensor) -> tuple[list[float | None], float]:
    """Share of each anchor's samples in its majority class, and the sample-weighted mean.

    Args:
        counts: (K, C) samples per anchor and class (`anchor_class_counts`).

    Returns:
        (per-anchor purity, None for an empty anchor; mean purity = sum of majority counts / N).
    """
    counts = counts.cpu()
    majority, sizes = counts.max(dim=1).values, counts.sum(dim=1)
    per_anchor = [round(int(m) / int(s), 4) if s > 0 else None for m, s in zip(majority, sizes, strict=True)]
    mean = float(majority.sum() / sizes.sum()) if sizes.sum() > 0 else float("nan")
    return per_anchor, mean


def anchor_purity(
    assignments: torch.Tensor, labels: torch.Tensor, num_anchors: int
) -> tuple[list[float | None], float]:
    """`purity_of_counts` of the samples' (anchor, class) pairs.

    Args:
        assignments: (N,) anchor id of each sample.
        labels: (N,) class id of each sample (>= 0).
        num_anchors: K.
    """
    return purity_of_counts(anchor_class_counts(assignments.cpu(), labels.cpu(), num_anchors))


def sorted_shares(counts: torch.Tensor) -> torch.Tensor:
    """Sorted (descending) shares of the non-zero entries of a histogram."""
    counts = counts.cpu().double()
    counts = counts[counts > 0]
    return (counts / counts.sum()).sort(descending=True).values


def class_frequencies(labels: torch.Tensor) -> torch.Tensor:
    """Sorted (descending) share of each class present among `labels`."""
    return sorted_shares(torch.bincount(labels.cpu().long()))


def bank_counts(bank: ScoreBank, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the diagnostics read from the bank, summed over its shards (collective when sharded).

    Args:
        bank: The score bank (this process's shard).
        labels: (N_train,) class id per sample index, or None when the split has no labels.

    Returns:
        (occupancy (K,), anchor x class counts (K, C) of the samples seen, or None without labels).
    """
    if labels is None:
        return bank.occupancy(), None
    indices, anchors = bank.assignments()
    local = anchor_class_counts(anchors, labels[indices.cpu()], bank.scores.shape[1], int(labels.max()) + 1)
    counts = bank.sum_over_shards(local)
    return counts.sum(dim=1), counts


def prior_diagnostics(
    prior: torch.Tensor,
    previous_prior: torch.Tensor,
    occupancy: torch.Tensor,
    counts: torch.Tensor | None = None,
) -> dict[str, Any]:
    """What a prior refresh logs (see docs/training.md); labels, if given, are read for logging only.

    Args:
        prior: (K,) the new prior, the one GH will read.
        previous_prior: (K,) the prior it replaces (uniform before the first refresh).
        occupancy: (K,) samples seen so far whose bank argmax is each anchor.
        counts: (K, C) the same split by class (`anchor_class_counts`), or None when the split has
            no labels.
    """
    occupancy = occupancy.cpu().long()
    estimate = occupancy.double() / max(int(occupancy.sum()), 1)
    values: dict[str, Any] = {
        "prior": [round(float(p), 6) for p in prior],
        "prior_sorted": [round(float(p), 6) for p in prior.sort(descending=True).values],
        "prior_entropy": prior_entropy(prior),
        "prior_drift": total_variation(prior, previous_prior),
        "anchor_occupancy": occupancy.tolist(),
        "anchors_occupied": int((occupancy > 0).sum()),
    }
    if counts is not None and counts.sum() > 0:
        true = sorted_shares(counts.sum(dim=0))
        per_anchor, mean = purity_of_counts(counts)
        values |= {
            "class_frequencies_sorted": [round(float(p), 6) for p in true],
            "prior_tv_to_classes": total_variation(prior.sort(descending=True).values, true),
            "estimate_tv_to_classes": total_variation(estimate.sort(descending=True).values, true),
            "anchor_purity": per_anchor,
            "anchor_purity_mean": mean,
        }
    return values


def read_refreshes(log_path: str | Path) -> list[dict[str, Any]]:
    """The prior refreshes of a run's log.jsonl, one per epoch (a resumed run's repeat replaces the first)."""
    refreshes: dict[int, dict[str, Any]] = {}
    for line in Path(log_path).read_text().splitlines():
        entry = json.loads(line)
        if "anchor_occupancy" in entry:
            refreshes[int(entry["epoch"])] = entry
    return [refreshes[epoch] for epoch in sorted(refreshes)]


def plot_prior_history(refreshes: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Sorted bank estimate per refresh (coloured by epoch) against the true sorted class frequencies.

    The estimate is the share of samples whose bank argmax is each anchor, sorted; the prior GH
    reads is this plus `--prior_floor` (estimated), or the known/uniform prior.
    """
    from matplotlib import colormaps  # lazily: plotting is the only user, `import gh_hf` must not load it
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched

    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    colours = colormaps["viridis"](torch.linspace(0, 1, max(len(refreshes), 1)).tolist())
    for number, (refresh, colour) in enumerate(zip(refreshes, colours, strict=False)):
        occupancy = torch.tensor(refresh["anchor_occupancy"], dtype=torch.float64)
        estimate = (occupancy / occupancy.sum().clamp(min=1)).sort(descending=True).values
        label = f"estimate, epoch {refresh['epoch']}" if number in (0, len(refreshes) - 1) else None
        axis.plot(range(1, len(estimate) + 1), estimate, color=colour, label=label)
    true = next((r["class_frequencies_sorted"] for r in refreshes if "class_frequencies_sorted" in r), None)
    if true is not None:
        axis.plot(range(1, len(true) + 1), true, "k--", linewidth=2, label="true class frequencies")
    axis.set(xlabel="rank", ylabel="share of samples", yscale="log", title="Anchor prior per refresh")
    axis.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
