"""The per-sample moving average behind GH's score bank and BCL's loss memory."""

from __future__ import annotations

import torch


class PerSampleMovingAverage:
    """Per training sample, a moving average of a value (a score vector, a loss).

    The first sighting of a sample copies its value; later ones do v_i <- beta v_i + (1-beta) x_i.
    Updates are vectorised over the batch. `state_dict` names the averages `value_key`, so
    subclasses keep the checkpoint keys they have always written.

    Args:
        num_samples: N_train, the size of the training split (samples are addressed by `index`).
        value_shape: The shape of one sample's value: `(K,)` for anchor scores, `()` for a loss.
        device: where the averages live (the training device avoids a host copy per step).
    """

    value_key = "values"
    description = "per-sample moving average"

    def __init__(
        self, num_samples: int, value_shape: tuple[int, ...] = (), device: torch.device | str = "cpu"
    ):
        if num_samples < 1 or any(size < 1 for size in value_shape):
            raise ValueError(
                f"{type(self).__name__} needs num_samples >= 1 and a non-empty value shape, "
                f"got num_samples={num_samples}, value_shape={value_shape}."
            )
        self.values = torch.zeros(num_samples, *value_shape, device=device)
        self.seen = torch.zeros(num_samples, dtype=torch.bool, device=device)

    @torch.no_grad()
    def update(self, indices: torch.Tensor, values: torch.Tensor, momentum: float) -> None:
        """Averages `values` into the samples `indices`.

        Args:
            indices: (N,) sample indices (duplicates allowed only with identical values).
            values: (N, *value_shape) the new values.
            momentum: beta in [0, 1).
        """
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        indices = indices.to(self.values.device, torch.long)
        values = values.detach().to(self.values.device, torch.float32)
        seen = self.seen[indices].view(-1, *([1] * (values.dim() - 1)))  # broadcasts over the value
        self.values[indices] = torch.where(
            seen, momentum * self.values[indices] + (1 - momentum) * values, values
        )
        self.seen[indices] = True

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {self.value_key: self.values, "seen": self.seen}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restores a checkpointed state; raises ValueError if it was written for another split size."""
        saved = state[self.value_key]
        if saved.shape != self.values.shape:
            raise ValueError(
                f"Checkpointed {self.description} has shape {tuple(saved.shape)}, expected "
                f"{tuple(self.values.shape)}: was it written for another dataset or number of anchors?"
            )
        self.values.copy_(saved.to(self.values.device))
        self.seen.copy_(state["seen"].to(self.seen.device))
