from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]


def accelerate_command(script: Path | str, *args: str, processes: int = 1) -> list[str]:
    """`accelerate launch` of `script` on CPU (no mixed precision, no dynamo). Several processes get a
    free port of their own, so launches that run side by side (`pytest -n 2`) never share one."""
    from gh_hf.dist import free_port

    launcher = ["--num_processes", str(processes)]
    if processes > 1:
        launcher = ["--multi_gpu", *launcher, "--main_process_port", str(free_port())]
    options = ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*ACCELERATE, *launcher, *options, str(script), *args]


TINY_BACKBONE = {"backbone": "resnet18", "backbone_kwargs": {"channels": [8, 16, 32, 64]}}
# A pretraining run of seconds on digits (scripts/pretrain.py arguments; later ones override).
TINY_RUN = [
    "--dataset", "digits", "--imbalance_ratio", "10", "--image_size", "12",
    "--backbone_kwargs", '{"channels": [8, 16, 32, 64]}', "--projection_dim", "16", "--num_anchors", "10",
    "--per_device_batch_size", "64", "--dataloader_num_workers", "0", "--num_epochs", "2",
    "--gh_warmup_epochs", "1", "--gh_ramp_epochs", "1", "--prior_every_epochs", "1",
    "--lr_warmup_epochs", "0", "--sinkhorn_iterations", "50", "--knn_at_end", "false", "--logging_steps", "1",
]  # fmt: skip


@pytest.fixture
def tiny_config():
    from gh_hf import GHConfig

    return GHConfig(**TINY_BACKBONE, in_chans=1, image_size=16, projection_dim=16, num_anchors=10)


def pytest_configure(config):
    # Under pytest-xdist (`make test`: one worker per core) each worker gets its share of the cores.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps one state per process (device, mixed precision): a test that made an
    Accelerator must not decide the next one's, whatever order pytest-xdist gives the tests."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


FASHION_MNIST_FILES = "/usr/share/datasets/fashion-mnist"
STREAMED_SOURCE_ROWS = 2000  # the first Fashion-MNIST training images, written as 250 parquet shards
STREAMED_SHARDS = 250


def fashion_mnist_subset(rows: int):
    """The first `rows` Fashion-MNIST training images as a `Dataset` (skips the test without the files)."""
    from pathlib import Path

    import numpy as np
    from datasets import ClassLabel, Dataset, Features, Image

    from gh_hf.data import FASHION_MNIST_CLASSES, read_idx

    folder = Path(FASHION_MNIST_FILES)
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST files absent (apt-get install dataset-fashion-mnist)")
    images = read_idx(folder / "train-images-idx3-ubyte.gz")[:rows]
    labels = read_idx(folder / "train-labels-idx1-ubyte.gz")[:rows].astype(np.int64)
    features = Features({"image": Image(), "label": ClassLabel(names=FASHION_MNIST_CLASSES)})
    return Dataset.from_dict({"image": list(images), "label": labels}, features=features)


@pytest.fixture(scope="session")
def fashion_mnist_shards(tmp_path_factory):
    """(source Dataset, folder of its parquet shards with columns image, label, index = source row)."""
    from datasets.utils.logging import disable_progress_bar

    from gh_hf.data import write_parquet_shards

    disable_progress_bar()
    source = fashion_mnist_subset(STREAMED_SOURCE_ROWS)
    folder = tmp_path_factory.mktemp("fashion_mnist_parquet")
    write_parquet_shards(source, folder, STREAMED_SHARDS)
    return source, folder


def interrupt_at_checkpoint(command: list[str], env: dict[str, str], checkpoint: Path) -> None:
    """Starts a pretraining `command` and kills its whole process group once `checkpoint` exists
    (a crash mid-run: no clean shutdown), then asserts the run was really cut short."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), f"no {checkpoint.name} before the run ended"
    assert not (checkpoint.parents[1] / "encoder").exists(), "the run was not interrupted mid-way"
