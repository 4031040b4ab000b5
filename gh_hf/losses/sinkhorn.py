"""Sinkhorn-Knopp surrogate label allocation, in float32, safe for small epsilon and bf16 inputs."""

from __future__ import annotations

import logging
import math
from functools import lru_cache

import numpy as np
import torch

from gh_hf import dist

logger = logging.getLogger(__name__)

# exp(-50) ~ 2e-22: a kernel whose entries span at most e^50 stays far from float32 underflow
# (1e-38), so the scaling vectors stay finite in the plain (exp) domain.
_EXP_DOMAIN_RANGE = 50.0
_CHECK_EVERY = 10
# CPU products of at most this many kernel entries per view go through NumPy (`_sinkhorn_matvec`)
_NUMPY_MAX_ENTRIES = 131_072


@torch.no_grad()
def sinkhorn(
    scores: torch.Tensor,
    prior: torch.Tensor,
    epsilon: float = 0.05,
    iterations: int = 300,
    gather_distributed: bool = False,
    tolerance: float = 1e-6,
    return_iterations: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, int]:
    """Entropic optimal transport from samples (uniform) to anchors (marginal `prior`).

    Solves Q* = argmin_{Q >= 0, Q 1 = 1/N, Q^T 1 = prior} <Q, -S> - eps H(Q) and returns
    q = N Q*: every row sums to 1 and the column masses follow `prior`.

    Q* = diag(u) exp(S/eps) diag(v). Each row of S/eps is shifted by its maximum (absorbed in u).
    When the shifted kernel spans at most e^50 (always for scores in [-1, 1] and eps >= 0.04),
    the scalings run in the plain domain, two matrix-vector products per view and iteration:
    on CPUs as BLAS matrix-vector products (through NumPy views, see `_sinkhorn_matvec`) on
    contiguous copies of the kernel and its transpose; on GPUs replayed ten iterations at a time as
    a CUDA graph (batched products, eager where capture fails). Otherwise (small eps) they run
    in the log domain, where nothing can overflow. All paths compute in float32.

    Args:
        scores: (N, K) anchor scores S, or (V, N, K) for V problems sharing the prior (the two
            views), solved together. Any float dtype.
        prior: (K,) non-negative anchor marginal pi; normalised here.
        epsilon: entropic regularisation (> 0).
        iterations: the most Sinkhorn iterations (>= 1); each is one column and one row scaling.
        gather_distributed: solve over the scores of all processes (the global batch) and return
            this process's rows.
        tolerance: stop early once every column's mass is within `tolerance` of `prior` (checked
            every 10 iterations; rows are exact after each iteration). 0 runs all `iterations`.
            Random scores converge to 1e-6 in ~10 iterations, trained (peaked) ones in 80-300.
        return_iterations: also return the number of iterations run (the largest over the views).

    Returns:
        float32 allocation of the shape of `scores` (this process's rows), no gradient; with
        `return_iterations`, the tuple (allocation, iterations run).
    """
    _check_arguments(scores, prior, epsilon, iterations, tolerance)
    single = scores.ndim == 2
    scores = scores.detach()[None] if single else scores.detach()  # (V, N, K)
    local_batch = scores.shape[1]
    if gather_distributed:
        scores = dist.gather(scores.transpose(0, 1)).transpose(0, 1)  # rows of every process
    with torch.autocast(device_type=scores.device.type, enabled=False):
        prior = prior.to(device=scores.device, dtype=torch.float32).clamp_min(0)
        # One (V, N, K) buffer, owned here: each step below writes in place, because on CPU every
        # fresh tensor of this size is paid again in page faults (four fewer took ~50 ms off the
        # GH loss at B = 4096, K = 1000).
        log_kernel = scores.float() / epsilon
        log_kernel.sub_(log_kernel.amax(dim=-1, keepdim=True))  # (V, N, K), row max 0
        prior_mass, kernel_range = torch.stack([prior.sum(), -log_kernel.min()]).tolist()  # one device sync
        if not prior_mass > 0:
            raise ValueError("prior must have positive total mass.")
        prior = prior / prior_mass
        if kernel_range > _EXP_DOMAIN_RANGE:
            allocation, done = _sinkhorn_log(log_kernel, prior, iterations, tolerance)
        elif scores.device.type == "cpu":
            allocation, done = _sinkhorn_matvec(log_kernel.exp_(), prior, iterations, tolerance)
        else:  # CUDA graphs where capture works, batched products elsewhere (e.g. MPS)
            allocation, done = _sinkhorn_graphed(log_kernel.exp_(), prior, iterations, tolerance)
    if gather_distributed:
        allocation = dist.local_slice(allocation.transpose(0, 1), local_batch).transpose(0, 1)
    allocation = allocation[0] if single else allocation
    return (allocation, done) if return_iterations else allocation


def _check_arguments(
    scores: torch.Tensor, prior: torch.Tensor, epsilon: float, iterations: int, tolerance: float
) -> None:
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}.")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}.")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
    if scores.ndim not in (2, 3):
        raise ValueError(f"scores must have shape (N, K) or (V, N, K), got {tuple(scores.shape)}.")
    if prior.ndim != 1 or prior.shape[0] != scores.shape[-1]:
        raise ValueError(f"prior must have shape ({scores.shape[-1]},), got {tuple(prior.shape)}.")


def _sinkhorn_matvec(
    kernel: torch.Tensor, prior: torch.Tensor, iterations: int, tolerance: float
) -> tuple[torch.Tensor, int]:
    """Plain-domain scalings as one matrix-vector product per view and half-iteration (CPU).

    With x = v / prior and y = N u, an iteration is x = 1 / ((K^T / N) y), then
    y = 1 / ((K diag(prior)) x): both matrices are contiguous copies made once, so each product
    streams its matrix in memory order (a transposed view costs ~4x on CPU), and every result
    goes into a preallocated buffer. The column error is read off the next iteration's first
    product, so a check costs no extra product. `kernel` is consumed: the allocation is written
    into it.

    Small products run through NumPy views of these tensors (shared memory, no copy): at 512 x 100
    `np.dot` takes ~2.8 us against ~6.3 us for `torch.mv`, whose per-call dispatch outweighs the
    product itself (GH loss at B = 512, K = 100, 300 iterations: 4.9 against 7.3 ms). From
    ~200k kernel entries per view on, `torch.mv` (MKL) is faster; measured in one process, the
    crossover lies between 1024 x 100 and 2048 x 100 (docs/objective.md).
    """
    views, num_samples, num_anchors = kernel.shape
    kernel = kernel.contiguous()
    column_kernel = kernel.transpose(1, 2).contiguous().div_(num_samples)  # (V, K, N)
    row_kernel = kernel.mul_(prior)  # (V, N, K), in place: `kernel` is this solver's own buffer
    y = torch.ones(views, num_samples)
    x = torch.empty(views, num_anchors)
    column_sums, row_sums = torch.empty_like(x), torch.empty_like(y)
    if num_samples * num_anchors <= _NUMPY_MAX_ENTRIES:
        # NumPy arrays that are these tensors' memory: results land in the tensors
        product, reciprocal, array = np.dot, np.reciprocal, torch.Tensor.numpy
    else:  # the tensors themselves (`detach` is a view of the same memory)
        product, reciprocal, array = torch.mv, torch.reciprocal, torch.Tensor.detach
    y_, x_, column_sums_, row_sums_ = (array(t) for t in (y, x, column_sums, row_sums))
    column_products = list(zip(array(column_kernel), y_, column_sums_, strict=True))
    row_products = list(zip(array(row_kernel), x_, row_sums_, strict=True))
    done = 0
    while done < iterations:
        for matrix, vector, result in column_products:
            product(matrix, vector, out=result)
        if tolerance and done and done % _CHECK_EVERY == 0:
            # column masses of the current allocation: v * K^T u = prior * x * column_sums
            if (x * column_sums - 1).mul_(prior).abs_().max() <= tolerance:
                break
        reciprocal(column_sums_, out=x_)
        for matrix, vector, result in row_products:
            product(matrix, vector, out=result)
        reciprocal(row_sums_, out=y_)
        done += 1
    return row_kernel.mul_(y[..., None]).mul_(x[:, None, :]), done


class _Scaling:
    """Sinkhorn scalings on static buffers: u (V, N), v (V, K) for kernel (V, N, K), prior (K,).

    On CUDA, `CHECK_EVERY` iterations are captured once per shape as a CUDA graph, so a chunk
    costs one launch instead of forty; elsewhere (or if capture fails) they run eagerly.
    """

    def __init__(self, shape: tuple[int, int, int], device: torch.device):
        views, num_samples, num_anchors = shape
        self.kernel = torch.ones(shape, device=device)
        self.prior = torch.full((num_anchors,), 1.0 / num_anchors, device=device)
        self.u = torch.full((views, num_samples), 1.0 / num_samples, device=device)
        self.v = torch.ones(views, num_anchors, device=device)
        self.graph = self._capture() if device.type == "cuda" else None

    def iterate(self, steps: int) -> None:
        row_mass = 1.0 / self.u.shape[-1]
        for _ in range(steps):
            self.v.copy_(self.prior / (self.kernel.transpose(1, 2) @ self.u[..., None]).squeeze(-1))
            self.u.copy_(row_mass / (self.kernel @ self.v[..., None]).squeeze(-1))

    def _capture(self) -> torch.cuda.CUDAGraph | None:
        try:
            stream = torch.cuda.Stream(self.kernel.device)
            stream.wait_stream(torch.cuda.current_stream(self.kernel.device))
            with torch.cuda.stream(stream):
                self.iterate(_CHECK_EVERY)  # warm-up outside the capture
            torch.cuda.current_stream(self.kernel.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.iterate(_CHECK_EVERY)
            return graph
        except RuntimeError as error:  # e.g. capture not allowed here: eager is correct, just slower
            logger.warning("Sinkhorn runs without a CUDA graph (%s).", error)
            return None

    def chunk(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.iterate(_CHECK_EVERY)

    def column_error(self) -> torch.Tensor:
        mass = self.v * (self.kernel.transpose(1, 2) @ self.u[..., None]).squeeze(-1)
        return (mass - self.prior).abs().max()


@lru_cache(maxsize=8)
def _scaling_for(shape: tuple[int, int, int], device: torch.device) -> _Scaling:
    return _Scaling(shape, device)


def _sinkhorn_graphed(
    kernel: torch.Tensor, prior: torch.Tensor, iterations: int, tolerance: float
) -> tuple[torch.Tensor, int]:
    """Plain-domain scalings, both views batched, ten iterations per CUDA graph replay (GPU)."""
    num_samples = kernel.shape[1]
    scaling = _scaling_for(tuple(kernel.shape), kernel.device)
    scaling.kernel.copy_(kernel)
    scaling.prior.copy_(prior)
    scaling.u.fill_(1.0 / num_samples)
    done = 0
    while done + _CHECK_EVERY <= iterations:
        scaling.chunk()
        done += _CHECK_EVERY
        if tolerance and scaling.column_error() <= tolerance:
            break
    else:
        scaling.iterate(iterations - done)
        done = iterations
    return num_samples * scaling.u[..., None] * kernel * scaling.v[:, None, :], done


def _sinkhorn_log(
    log_kernel: torch.Tensor, prior: torch.Tensor, iterations: int, tolerance: float
) -> tuple[torch.Tensor, int]:
    """Log-domain scalings (small epsilon): logsumexp instead of products, nothing overflows."""
    num_samples = log_kernel.shape[1]
    log_prior = prior.log()  # -inf where the prior is 0
    log_row = -math.log(num_samples)
    log_u = torch.full(log_kernel.shape[:2], log_row, device=log_kernel.device)  # (V, N)
    for done in range(1, iterations + 1):
        log_v = log_prior - torch.logsumexp(log_kernel + log_u[..., None], dim=1)  # (V, K)
        log_u = log_row - torch.logsumexp(log_kernel + log_v[:, None, :], dim=2)  # (V, N)
        if tolerance and done % _CHECK_EVERY == 0:
            column_mass = (log_kernel + log_u[..., None] + log_v[:, None, :]).exp().sum(dim=1)
            if (column_mass - prior).abs().max() <= tolerance:
                break
    allocation = (log_kernel + log_u[..., None] + log_v[:, None, :] + math.log(num_samples)).exp()
    return allocation, done
