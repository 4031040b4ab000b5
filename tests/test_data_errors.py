"""Data problems end like bad arguments: one line naming the file or argument and what to do, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gh_hf.data import DataSourceError, data_error_message

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--image_size", "8", "--backbone_kwargs", '{"channels": [8, 16, 32, 64]}', "--projection_dim", "16",
    "--num_anchors", "4", "--per_device_batch_size", "4", "--dataloader_num_workers", "0",
    "--num_epochs", "1", "--gh_warmup_epochs", "0", "--sinkhorn_iterations", "10",
    "--knn_every_epochs", "0", "--knn_at_end", "false", "--checkpoint_every_epochs", "0",
    "--push_to_hub", "false",
]  # fmt: skip


def run_script(script: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),  # no cached Hub datasets
        "HF_DATASETS_CACHE": str(tmp_path / "hf_home" / "datasets"),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, str(ROOT / "scripts" / script), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    # A progress bar may share the line (tqdm leaves it open), so look for the marker anywhere.
    lines = [line[line.index("error: ") :] for line in result.stderr.splitlines() if "error: " in line]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]


def image_folder(root: Path, corrupt: bool = False) -> Path:
    """Two classes of four 8x8 RGB PNGs; with `corrupt`, class b's last file is not an image."""
    rng = np.random.RandomState(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.randint(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    if corrupt:
        (root / "b" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image at all")
    return root


def pretrain_args(tmp_path: Path, *args: str) -> list[str]:
    return [*TINY, "--output_dir", str(tmp_path / "run"), *args]


def test_missing_dataset_folder(tmp_path):
    missing = tmp_path / "no_such_folder"
    result = run_script(
        "pretrain.py",
        pretrain_args(tmp_path, "--dataset", "imagefolder", "--data_dir", str(missing)),
        tmp_path,
    )
    assert_one_line_error(result, str(missing), "--data_dir")


def test_split_file_with_a_bad_line(tmp_path):
    image_folder(tmp_path / "images")
    split_file = tmp_path / "train.txt"
    split_file.write_text("a/0.png 0\na/1.png zero\n")
    args = [
        "--dataset",
        "split_file",
        "--split_file",
        str(split_file),
        "--image_root",
        str(tmp_path / "images"),
    ]
    result = run_script("pretrain.py", pretrain_args(tmp_path, *args, "--imbalance_ratio", "1"), tmp_path)
    assert_one_line_error(result, f"{split_file}:2", "a/1.png zero")


def test_batch_larger_than_the_split(tmp_path):
    args = ["--dataset", "digits", "--imbalance_ratio", "10", "--per_device_batch_size", "100000"]
    result = run_script("pretrain.py", pretrain_args(tmp_path, *args), tmp_path)
    assert_one_line_error(result, "--per_device_batch_size=100000", "lower --per_device_batch_size")


def test_offline_hub_dataset(tmp_path):
    result = run_script("pretrain.py", pretrain_args(tmp_path, "--dataset", "cifar10"), tmp_path)
    assert_one_line_error(result, "uoft-cs/cifar10", "--data_dir")


@pytest.mark.parametrize(
    ("view_pipeline", "workers"),
    [("per_image", "1"), ("batched", "0")],  # per image: found mid-epoch in a worker; batched: at decode time
)
def test_corrupt_image_names_its_path_and_sample_index(tmp_path, view_pipeline, workers):
    folder = image_folder(tmp_path / "images", corrupt=True)
    args = ["--dataset", "imagefolder", "--data_dir", str(folder), "--imbalance_ratio", "1",
            "--view_pipeline", view_pipeline, "--dataloader_num_workers", workers]  # fmt: skip
    result = run_script("pretrain.py", pretrain_args(tmp_path, *args), tmp_path)
    assert_one_line_error(result, "3.png", "sample index 7")
    assert not (tmp_path / "run" / "encoder").exists()


def test_benchmark_with_a_missing_encoder_folder(tmp_path):
    missing = str(tmp_path / "runs" / "gh" / "encoder")
    result = run_script("benchmark.py", ["--encoders", missing, "--dataset", "digits"], tmp_path)
    assert_one_line_error(result, repr(missing), "--encoders")


def test_data_error_message_strips_the_dataloader_worker_traceback():
    wrapped = DataSourceError(
        "Caught DataSourceError in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\ngh_hf.data.errors.DataSourceError: sample index 3: cannot decode x.png'
    )
    assert data_error_message(wrapped) == "sample index 3: cannot decode x.png"
    assert data_error_message(DataSourceError("plain: one line")) == "plain: one line"
