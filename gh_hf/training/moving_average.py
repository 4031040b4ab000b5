"""The per-sample moving average behind GH's score bank and BCL's loss memory, whole or sharded."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

logger = logging.getLogger(__name__)


def shard_rows(num_samples: int, num_shards: int, shard: int) -> int:
    """Rows of shard `shard` of `num_shards`: the samples i with i % num_shards == shard."""
    return (num_samples - shard + num_shards - 1) // num_shards


class PerSampleMovingAverage:
    """Per training sample, a moving average of a value (a score vector, a loss).

    The first sighting of a sample copies its value; later ones do v_i <- beta v_i + (1-beta) x_i.
    Updates are vectorised over the batch. With `num_shards` W > 1 this object holds shard r of
    the averages: the rows of the samples i with i % W == r, row i // W. Every shard is updated
    from the same global batch and keeps the samples it owns, so each row is bitwise the row a
    whole (W = 1) average holds. `state_dict` names the averages `value_key`, so subclasses keep
    the checkpoint keys they have always written; `save_shard` / `load_shards` write and read one
    file per shard and re-shard onto another W.

    Args:
        num_samples: N_train, the size of the training split (samples are addressed by `index`).
        value_shape: The shape of one sample's value: `(K,)` for anchor scores, `()` for a loss.
        device: where the averages live (the training device avoids a host copy per step).
        dtype: Storage dtype of the averages (a floating dtype); updates compute in float32.
        num_shards: W, the number of shards the samples are split into (1: this object holds all).
        shard: r in [0, W), the shard this object holds.
    """

    value_key = "values"
    description = "per-sample moving average"
    file_stem = "moving_average"
    reshard_chunk_rows = 1 << 16  # rows read at a time when re-sharding: memory = own shard + one chunk

    def __init__(
        self,
        num_samples: int,
        value_shape: tuple[int, ...] = (),
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        num_shards: int = 1,
        shard: int = 0,
    ):
        name = type(self).__name__
        if num_samples < 1 or any(size < 1 for size in value_shape):
            raise ValueError(
                f"{name} needs num_samples >= 1 and a non-empty value shape, "
                f"got num_samples={num_samples}, value_shape={value_shape}."
            )
        if num_shards < 1 or not 0 <= shard < num_shards:
            raise ValueError(
                f"{name}: shard={shard} of num_shards={num_shards} is invalid: needs 0 <= shard < num_shards."
            )
        if not dtype.is_floating_point:
            raise ValueError(f"{name}: dtype={dtype} is invalid: the averages need a floating dtype.")
        self.num_samples, self.num_shards, self.shard = num_samples, num_shards, shard
        rows = shard_rows(num_samples, num_shards, shard)
        self.values = torch.zeros(rows, *value_shape, device=device, dtype=dtype)
        self.seen = torch.zeros(rows, dtype=torch.bool, device=device)

    def sample_indices(self) -> torch.Tensor:
        """(rows,) the sample index of each row this shard holds."""
        rows = torch.arange(len(self.seen), device=self.seen.device)
        return rows * self.num_shards + self.shard

    @torch.no_grad()
    def update(self, indices: torch.Tensor, values: torch.Tensor, momentum: float) -> None:
        """Averages `values` into the samples `indices` this shard owns; the others are skipped.

        Args:
            indices: (N,) sample indices (duplicates allowed only with identical values).
            values: (N, *value_shape) the new values.
            momentum: beta in [0, 1).
        """
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        indices = indices.to(self.values.device, torch.long)
        values = values.detach().to(self.values.device, torch.float32)
        owned = indices % self.num_shards == self.shard
        rows, values = indices[owned] // self.num_shards, values[owned]
        seen = self.seen[rows].view(-1, *([1] * (values.dim() - 1)))  # broadcasts over the value
        averaged = torch.where(seen, momentum * self.values[rows].float() + (1 - momentum) * values, values)
        self.values[rows] = averaged.to(self.values.dtype)
        self.seen[rows] = True

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

    # ---- shard files -------------------------------------------------------------------------
    @classmethod
    def shard_glob(cls) -> str:
        """The glob of this class's shard files, whatever the number of processes that wrote them."""
        return f"{cls.file_stem}-shard*-of-*.safetensors"

    def shard_file(self, directory: str | os.PathLike, shard: int, num_shards: int) -> Path:
        return Path(directory) / f"{self.file_stem}-shard{shard:05d}-of-{num_shards:05d}.safetensors"

    def save_shard(self, directory: str | os.PathLike) -> Path:
        """Writes this shard to `directory/<file_stem>-shard<r>-of-<W>.safetensors`; returns the path."""
        path = self.shard_file(directory, self.shard, self.num_shards)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {self.value_key: self.values.contiguous().cpu(), "seen": self.seen.cpu()}
        save_file(tensors, str(path), metadata={"num_samples": str(self.num_samples)})
        return path

    @torch.no_grad()
    def load_shards(self, directory: str | os.PathLike) -> None:
        """Reads this shard from the shard files in `directory`, whatever number of processes wrote them.

        Written by W processes and read by W: each shard reads its own file. Read by another
        number of processes: each shard picks its rows out of every file, `reshard_chunk_rows` at a
        time (the samples it owns are the same whatever the files' layout). Values are cast to
        this object's dtype.

        Raises:
            ValueError: when `directory` holds no shard files, misses one of the files its writers
                left (naming both numbers of processes), or was written for another split size
                or value shape.
        """
        saved_shards = self._saved_shards(directory)
        if saved_shards == self.num_shards:
            self._read_rows(self.shard_file(directory, self.shard, saved_shards), saved_shards, self.shard)
            return
        logger.warning(
            "Re-sharding the %s: written by %d processes, read by %d.", self.description, saved_shards,
            self.num_shards,
        )  # fmt: skip
        for shard in range(saved_shards):
            self._read_rows(self.shard_file(directory, shard, saved_shards), saved_shards, shard)

    def _saved_shards(self, directory: str | os.PathLike) -> int:
        pattern = re.compile(rf"^{re.escape(self.file_stem)}-shard(\d+)-of-(\d+)\.safetensors$")
        names = (
            sorted(p.name for p in Path(directory).glob(self.shard_glob()))
            if Path(directory).is_dir()
            else []
        )
        found = [(int(m.group(1)), int(m.group(2))) for name in names if (m := pattern.match(name))]
        if not found:
            raise ValueError(
                f"{str(directory)!r} holds no {self.description} shards "
                f"({self.shard_glob()}): was it written before the bank was sharded, "
                "or by a run without it?"
            )
        saved_shards = max(total for _, total in found)
        missing = [
            self.shard_file(directory, shard, saved_shards).name
            for shard in range(saved_shards)
            if (shard, saved_shards) not in found
        ]
        if missing:
            raise ValueError(
                f"The {self.description} in {str(directory)!r} was written by {saved_shards} processes and "
                f"is resumed on {self.num_shards}, but {missing} is missing: every shard file is needed."
            )
        return saved_shards

    def _read_rows(self, path: Path, saved_shards: int, saved_shard: int) -> None:
        """Copies the rows this shard owns from one file: shard `saved_shard` of `saved_shards`."""
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            saved_samples = int(handle.metadata()["num_samples"])
            values, seen = handle.get_slice(self.value_key), handle.get_slice("seen")
            saved_shape = tuple(values.get_shape())
            expected_rows = shard_rows(saved_samples, saved_shards, saved_shard)
            if saved_shape[0] != expected_rows:
                raise ValueError(
                    f"{path.name} holds {saved_shape[0]} rows, but shard {saved_shard} of {saved_shards} of "
                    f"{saved_samples} samples has {expected_rows}: the file is damaged or renamed."
                )
            if saved_samples != self.num_samples or saved_shape[1:] != tuple(self.values.shape[1:]):
                raise ValueError(
                    f"Checkpointed {self.description} holds {saved_samples} samples x {saved_shape[1:]}, "
                    f"expected {self.num_samples} x {tuple(self.values.shape[1:])}: was it written for "
                    "another dataset or number of anchors?"
                )
            for start in range(0, saved_shape[0], self.reshard_chunk_rows):
                stop = min(start + self.reshard_chunk_rows, saved_shape[0])
                samples = torch.arange(start, stop) * saved_shards + saved_shard
                owned = samples % self.num_shards == self.shard
                rows = (samples[owned] // self.num_shards).to(self.values.device)
                self.values[rows] = values[start:stop][owned].to(self.values.device, self.values.dtype)
                self.seen[rows] = seen[start:stop][owned].to(self.seen.device)
