"""Losses of gh_hf: SimCLR's NT-Xent, its focal variant, Sinkhorn allocation and the GH loss."""

from gh_hf.losses.gh import GHLoss, swapped_prediction
from gh_hf.losses.nt_xent import focal_nt_xent, nt_xent
from gh_hf.losses.sinkhorn import sinkhorn

__all__ = ["GHLoss", "focal_nt_xent", "nt_xent", "sinkhorn", "swapped_prediction"]
