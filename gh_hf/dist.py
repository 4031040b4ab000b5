"""Distributed helpers: a differentiable all-gather that is a no-op on one process, the process
group's end for entry points, Accelerator defaults for CPU runs."""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as torch_dist


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1


def world_size() -> int:
    return torch_dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return torch_dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every process's gradient for the local slice.

    Each process computes its loss on the gathered batch; the gradient reaching a local tensor is
    the sum over processes of their losses' gradients. DDP's averaging then restores exactly the
    gradient of the single-process loss (without the sum, gradients come out scaled by 1/W).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.batch_size = tensor.shape[0]
        gathered = [torch.empty_like(tensor) for _ in range(torch_dist.get_world_size())]
        torch_dist.all_gather(gathered, tensor.contiguous())
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous()
        torch_dist.all_reduce(grad, op=torch_dist.ReduceOp.SUM)
        start = torch_dist.get_rank() * ctx.batch_size
        return grad[start : start + ctx.batch_size]


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenates `tensor` (B, ...) from all processes along dim 0, keeping gradients.

    Every process must pass the same batch size. On one process this returns `tensor` itself.
    """
    if not is_distributed():
        return tensor
    if tensor.requires_grad:
        return _GatherWithGrad.apply(tensor)
    gathered = [torch.empty_like(tensor) for _ in range(world_size())]
    torch_dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def local_slice(tensor: torch.Tensor, local_batch_size: int) -> torch.Tensor:
    """Rows of a gathered tensor that belong to this process."""
    start = rank() * local_batch_size
    return tensor[start : start + local_batch_size]


def default_accelerator_kwargs() -> dict[str, bool]:
    """Keyword arguments for `accelerate.Accelerator` that make multi-process CPU runs real.

    On a machine without an accelerator, `accelerate launch --multi_gpu --num_processes N` starts N
    processes, but `Accelerator()` then treats each as a lone process; `cpu=True` makes them one
    gloo group (DistributedType.MULTI_CPU).
    """
    has_accelerator = hasattr(torch, "accelerator") and torch.accelerator.is_available()
    return {} if has_accelerator or torch.cuda.is_available() else {"cpu": True}


def bf16_is_native() -> bool:
    """Whether the training device computes bfloat16 natively: a CUDA GPU with bf16 support, or
    (without one) a CPU with AMX or AVX512-BF16, where oneDNN runs bf16 convolutions ~2x faster."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu_checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private: may move
    return any(getattr(torch.cpu, check, lambda: False)() for check in cpu_checks)


def resolve_mixed_precision(setting: str) -> str:
    """`--mixed_precision`: "auto" becomes "bf16" where `bf16_is_native()`, else "no"."""
    if setting != "auto":
        return setting
    return "bf16" if bf16_is_native() else "no"


_Main = TypeVar("_Main", bound=Callable)


def end_process_group() -> None:
    """Destroys the default process group if one is running (a no-op otherwise).

    A process that exits with its gloo group alive can abort at interpreter shutdown ("terminate
    called without an active exception", SIGABRT): the group's C++ threads outlive Python. The
    launcher then reports the whole run as failed although every rank finished its work.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def ends_process_group(main: _Main) -> _Main:
    """Decorates a script's entry point so that the process group ends when it returns or raises.

    Every entry point that `accelerate launch` may start (scripts/pretrain.py, scripts/benchmark.py,
    the multi-process workers of the tests and benchmarks) carries it; library functions never end
    the group, since Accelerate's state outlives them in the process.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        finally:
            end_process_group()

    return wrapper  # type: ignore[return-value]


def free_port() -> int:
    """A TCP port free on this machine now, for `accelerate launch --main_process_port` of a local
    multi-process run, so that two such runs side by side never meet on accelerate's default 29500."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
