"""How gh_hf writes numbers for people: one rule for the benchmark tables and the model cards."""

from __future__ import annotations

import math


def percent(value: float | None) -> str:
    """`value` in [0, 1] as a percentage with two decimals; "n/a" for a missing (null) or NaN value."""
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"
