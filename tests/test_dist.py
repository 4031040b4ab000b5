"""The process group's end: entry points destroy it however they return.

A gloo group left alive at interpreter shutdown can abort the process (SIGABRT, "terminate called
without an active exception") after all its work is done; on 2 CPU cores about one 2-process launch
in five of scripts/bench_bank_memory.py did so before its entry point ended the group.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch.distributed as torch_dist

from gh_hf.dist import end_process_group, ends_process_group

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group in this process, destroyed at teardown whatever the test did."""
    torch_dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert torch_dist.is_initialized()
    yield
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_end_process_group_is_a_no_op_without_a_group():
    assert not torch_dist.is_initialized()
    end_process_group()
    assert not torch_dist.is_initialized()


def test_a_decorated_entry_point_ends_the_group_when_it_returns(process_group):
    @ends_process_group
    def main(value: int) -> int:
        assert torch_dist.is_initialized()  # the group lives while the entry point runs
        return value + 1

    assert main(1) == 2
    assert not torch_dist.is_initialized()


def test_a_decorated_entry_point_ends_the_group_when_it_raises(process_group):
    @ends_process_group
    def main() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        main()
    assert not torch_dist.is_initialized()


@pytest.mark.parametrize(
    ("script", "argv"),
    [
        ("pretrain", ["--preset", "no_such_preset"]),
        ("benchmark", ["--encoders", "no/such/encoder", "--dataset", "digits"]),
    ],
)
def test_launched_scripts_end_the_group_on_an_error_exit(process_group, script, argv):
    assert _script(script).main(argv) == 2
    assert not torch_dist.is_initialized()
