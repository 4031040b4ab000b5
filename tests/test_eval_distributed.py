"""Feature extraction and the kNN monitor across 2 gloo processes (`accelerate launch` on CPU).

Run as a script, this file is the worker; the test launches it with
`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2` (accelerate 1.x needs
ACCELERATE_USE_CPU to pick the gloo MULTI_CPU backend on a machine without GPUs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from gh_hf.dist import ends_process_group

NUM_ROWS = 37  # not a multiple of 2 processes x batch 4: the last batches are padded
BATCH_SIZE = 4


class RowDataset(torch.utils.data.Dataset):
    """Row i: pixel_values filled with i, label i % 3."""

    def __len__(self) -> int:
        return NUM_ROWS

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": torch.full((1, 2, 2), float(index)), "label": index % 3}


class AngleEncoder(nn.Module):
    """pooler_output = (i, cos i, sin i) for the image filled with i: row ids survive gathering."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, pixel_values: torch.Tensor) -> BaseModelOutputWithPooling:
        value = pixel_values.mean(dim=(1, 2, 3))
        return BaseModelOutputWithPooling(pooler_output=torch.stack([value, value.cos(), value.sin()], 1))


@ends_process_group
def _worker(output_path: str) -> None:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from gh_hf.evaluation import KNNMonitor, LongTailedAccuracy, extract_features

    accelerator = Accelerator()
    model, dataset = AngleEncoder(), RowDataset()
    features, labels = extract_features(model, dataset, batch_size=BATCH_SIZE, accelerator=accelerator)
    registered_loaders = len(accelerator._dataloaders)  # extraction must not leave its loader behind
    # What a plain gather returns: the padded total that gather_for_metrics must trim.
    loader = accelerator.prepare(DataLoader(dataset, batch_size=BATCH_SIZE))
    padded = sum(accelerator.gather(batch["label"]).numel() for batch in loader)
    metric = LongTailedAccuracy()
    for start in range(0, NUM_ROWS, 10):  # predictions = labels except every 4th row
        rows = torch.arange(start, min(start + 10, NUM_ROWS))
        metric.add_batch(
            predictions=torch.where(rows % 4 == 0, (labels[rows] + 1) % 3, labels[rows]),
            references=labels[rows],
        )
    monitor = KNNMonitor(dataset, dataset, class_counts=[30, 10, 3], k=3, batch_size=BATCH_SIZE)
    result = {
        "num_processes": accelerator.num_processes,
        "rows": features[:, 0].tolist(),
        "labels": labels.tolist(),
        "padded": padded,
        "registered_loaders": registered_loaders,
        "metric": metric.compute(class_counts=[30, 10, 3]) if accelerator.is_main_process else None,
        "monitor": monitor(model, accelerator),
        "monitor_single_process": monitor(model),
    }
    gathered = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(gathered, result)
    if accelerator.is_main_process:
        Path(output_path).write_text(json.dumps(gathered))
    accelerator.wait_for_everyone()


@pytest.mark.slow
def test_two_processes_gather_every_row_exactly_once(tmp_path):
    output = tmp_path / "result.json"
    from tests.conftest import accelerate_command  # not at the top: this file is also the worker

    command = accelerate_command(__file__, str(output), processes=2)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = json.loads(output.read_text())
    assert len(results) == 2 and all(r["num_processes"] == 2 for r in results)
    assert results[0]["padded"] == 40  # 5 batches of 4 on each of 2 processes
    assert results[0]["registered_loaders"] == 0
    for result in results:  # every process holds all rows, in order, none duplicated
        assert result["rows"] == [float(i) for i in range(NUM_ROWS)]
        assert result["labels"] == [i % 3 for i in range(NUM_ROWS)]
        assert result["monitor"] == result["monitor_single_process"]
    wrong = [i for i in range(NUM_ROWS) if i % 4 == 0]
    assert results[0]["metric"]["accuracy"] == pytest.approx(1 - len(wrong) / NUM_ROWS)


if __name__ == "__main__":
    _worker(sys.argv[1])
