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
# The largest over-relaxation factor (`_Overrelaxation`); at most 2 converges near the solution.
_OMEGA_MAX = 1.8


@torch.no_grad()
def sinkhorn(
    scores: torch.Tensor,
    prior: torch.Tensor,
    epsilon: float = 0.05,
    iterations: int = 300,
    gather_distributed: bool = False,
    tolerance: float = 1e-6,
    return_iterations: bool = False,
    overrelax: bool = True,
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

    With a tolerance, the scalings are over-relaxed once two checks have measured how fast plain
    Sinkhorn converges (`_Overrelaxation`): the same solution to the same tolerance in 2-5x fewer
    iterations on peaked scores. Without one, every path runs plain Sinkhorn-Knopp, iterate by
    iterate the paper's algorithm.

    Args:
        scores: (N, K) anchor scores S, or (V, N, K) for V problems sharing the prior (the two
            views), solved together. Any float dtype.
        prior: (K,) non-negative anchor marginal pi; normalised here.
        epsilon: entropic regularisation (> 0).
        iterations: the most Sinkhorn iterations (>= 1); each is one column and one row scaling.
        gather_distributed: solve over the scores of all processes (the global batch) and return
            this process's rows.
        tolerance: stop early once every column's mass is within `tolerance` of `prior` (checked
            every 10 iterations; the rows returned are exact). 0 runs all `iterations`. Random
            scores converge to 1e-6 in ~10 iterations, trained (peaked) ones in 70-300 plain
            iterations (50-80 over-relaxed on the fashion_mnist_lt pilot's last batches).
        return_iterations: also return the number of iterations run (the largest over the views).
        overrelax: over-relax the scalings once two checks have measured the rate (only with a tolerance);
            False runs plain Sinkhorn-Knopp to the tolerance.

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
        relaxation = _Overrelaxation(enabled=overrelax and tolerance > 0)
        if kernel_range > _EXP_DOMAIN_RANGE:
            allocation, done = _sinkhorn_log(log_kernel, prior, iterations, tolerance, relaxation)
        elif scores.device.type == "cpu":
            allocation, done = _sinkhorn_matvec(log_kernel.exp_(), prior, iterations, tolerance, relaxation)
        else:  # CUDA graphs where capture works, batched products elsewhere (e.g. MPS)
            allocation, done = _sinkhorn_graphed(log_kernel.exp_(), prior, iterations, tolerance, relaxation)
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


class _Overrelaxation:
    """The over-relaxation factor omega of the Sinkhorn scalings, set from the column errors of
    the convergence checks (every `_CHECK_EVERY` iterations).

    Over-relaxed Sinkhorn (Thibault et al., 2017, arXiv 1711.01851) moves each scaling omega times
    as far in log space as plain Sinkhorn would: a <- a^(1 - omega) a_plain^omega, i.e.
    a <- a (a / a_plain)^(-omega); omega = 1 is plain Sinkhorn. It has the same fixed point. Near
    it, Sinkhorn is block Gauss-Seidel on the two scalings, and this is SOR: if plain Sinkhorn
    shrinks the error by theta per iteration, omega = 2 / (1 + sqrt(1 - theta)) is the best factor
    and an error observed to shrink by rho at factor omega reveals theta = (rho + omega - 1)^2 /
    (rho omega^2). So the first two checks run plain and measure theta; each later check refines
    it and may raise omega (never lower it), up to `_OMEGA_MAX`. Far from the fixed point
    over-relaxation can overshoot: once a check's error exceeds the previous one's, the rest runs
    plain, which converges from anywhere. The row scaling of every check's iteration (and of the
    last) stays plain, so the allocation returned has exact rows.

    Every process holds the same global problem, so every process takes the same omegas.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.omega = 1.0
        self._last_error: float | None = None

    def update(self, error: float) -> float:
        """The factor for the next iterations, given the column error at this check."""
        previous, self._last_error = self._last_error, error
        if not self.enabled or previous is None or not (error > 0 and previous > 0):
            return self.omega
        rate = (error / previous) ** (1.0 / _CHECK_EVERY)  # error shrink per iteration
        if rate >= 1.0:
            if self.omega > 1.0:  # overshoot: plain Sinkhorn from here on
                self.enabled, self.omega = False, 1.0
            return self.omega
        theta = min((rate + self.omega - 1.0) ** 2 / (rate * self.omega**2), 1.0)
        self.omega = max(self.omega, min(2.0 / (1.0 + math.sqrt(1.0 - theta)), _OMEGA_MAX))
        return self.omega


def _plain_row_step(done: int, iterations: int) -> bool:
    """Whether iteration `done + 1` scales its rows plainly: the iterations a check reads (every
    `_CHECK_EVERY`) and the last, so that the allocation returned has exact rows."""
    return (done + 1) % _CHECK_EVERY == 0 or done + 1 == iterations


def _sinkhorn_matvec(
    kernel: torch.Tensor,
    prior: torch.Tensor,
    iterations: int,
    tolerance: float,
    relaxation: _Overrelaxation | None = None,
) -> tuple[torch.Tensor, int]:
    """Plain-domain scalings as one matrix-vector product per view and half-iteration (CPU).

    With x = v / prior and y = N u, an iteration is x = 1 / ((K^T / N) y), then
    y = 1 / ((K diag(prior)) x): both matrices are contiguous copies made once, so each product
    streams its matrix in memory order (a transposed view costs ~4x on CPU), and every result
    goes into a preallocated buffer. The column error is read off the next iteration's first
    product, so a check costs no extra product. `kernel` is consumed: the allocation is written
    into it. Over-relaxed (`relaxation`), x = x (x K^T y / N)^(-omega), and y likewise.

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
        product, reciprocal, multiply, power = np.dot, np.reciprocal, np.multiply, np.power
        array = torch.Tensor.numpy
    else:  # the tensors themselves (`detach` is a view of the same memory)
        product, reciprocal, multiply, power = torch.mv, torch.reciprocal, torch.mul, torch.pow
        array = torch.Tensor.detach

    def scale(vector, sums, omega: float) -> None:  # vector = 1 / sums, over-relaxed by omega
        if omega == 1.0:
            reciprocal(sums, out=vector)
        else:  # sums is free until the next product rewrites it
            multiply(vector, sums, out=sums)
            power(sums, -omega, out=sums)
            multiply(vector, sums, out=vector)

    y_, x_, column_sums_, row_sums_ = (array(t) for t in (y, x, column_sums, row_sums))
    column_products = list(zip(array(column_kernel), y_, column_sums_, strict=True))
    row_products = list(zip(array(row_kernel), x_, row_sums_, strict=True))
    relaxation = relaxation or _Overrelaxation(enabled=False)
    omega, done = 1.0, 0
    while done < iterations:
        for matrix, vector, result in column_products:
            product(matrix, vector, out=result)
        if tolerance and done and done % _CHECK_EVERY == 0:
            # column masses of the current allocation: v * K^T u = prior * x * column_sums
            error = (x * column_sums - 1).mul_(prior).abs_().max().item()
            if error <= tolerance:
                break
            omega = relaxation.update(error)
        scale(x_, column_sums_, omega)  # x is set (plain) before omega first leaves 1
        for matrix, vector, result in row_products:
            product(matrix, vector, out=result)
        scale(y_, row_sums_, 1.0 if _plain_row_step(done, iterations) else omega)
        done += 1
    return row_kernel.mul_(y[..., None]).mul_(x[:, None, :]), done


class _Scaling:
    """Sinkhorn scalings on static buffers: u (V, N) and x = v / prior (V, K) for kernel
    (V, N, K), prior (K,), and the over-relaxation exponent -omega (a 0-d tensor).

    On CUDA, `CHECK_EVERY` iterations are captured once per shape as a CUDA graph, so a chunk
    costs one launch instead of forty; elsewhere (or if capture fails) they run eagerly. omega
    lives on the device, so changing it between chunks needs no new capture. The last row scaling
    of every `iterate` call is plain: a check, or the allocation, reads exact rows.
    """

    def __init__(self, shape: tuple[int, int, int], device: torch.device):
        views, num_samples, num_anchors = shape
        self.kernel = torch.ones(shape, device=device)
        self.prior = torch.full((num_anchors,), 1.0 / num_anchors, device=device)
        self.u = torch.full((views, num_samples), 1.0 / num_samples, device=device)
        self.x = torch.ones(views, num_anchors, device=device)
        self.exponent = torch.full((), -1.0, device=device)
        self.graph = self._capture() if device.type == "cuda" else None

    def reset(self, kernel: torch.Tensor, prior: torch.Tensor) -> None:
        self.kernel.copy_(kernel)
        self.prior.copy_(prior)
        self.u.fill_(1.0 / self.u.shape[-1])
        self.x.fill_(1.0)
        self.exponent.fill_(-1.0)

    def iterate(self, steps: int) -> None:
        row_mass = 1.0 / self.u.shape[-1]
        for step in range(steps):
            column_sums = (self.kernel.transpose(1, 2) @ self.u[..., None]).squeeze(-1)
            self.x.mul_(column_sums.mul_(self.x).pow_(self.exponent))  # x (x K^T u)^-omega
            row_sums = (self.kernel @ (self.prior * self.x)[..., None]).squeeze(-1)
            if step == steps - 1:
                self.u.copy_(row_sums.reciprocal_().mul_(row_mass))
            else:  # u (u K v / row_mass)^-omega
                self.u.mul_(row_sums.mul_(self.u).div_(row_mass).pow_(self.exponent))

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
        mass = self.prior * self.x * (self.kernel.transpose(1, 2) @ self.u[..., None]).squeeze(-1)
        return (mass - self.prior).abs().max()

    def allocation(self, kernel: torch.Tensor) -> torch.Tensor:
        return self.u.shape[-1] * self.u[..., None] * kernel * (self.prior * self.x)[:, None, :]


@lru_cache(maxsize=8)
def _scaling_for(shape: tuple[int, int, int], device: torch.device) -> _Scaling:
    return _Scaling(shape, device)


def _sinkhorn_graphed(
    kernel: torch.Tensor,
    prior: torch.Tensor,
    iterations: int,
    tolerance: float,
    relaxation: _Overrelaxation | None = None,
) -> tuple[torch.Tensor, int]:
    """Plain-domain scalings, both views batched, ten iterations per CUDA graph replay (GPU)."""
    scaling = _scaling_for(tuple(kernel.shape), kernel.device)
    scaling.reset(kernel, prior)
    relaxation = relaxation or _Overrelaxation(enabled=False)
    done = 0
    while done + _CHECK_EVERY <= iterations:
        scaling.chunk()
        done += _CHECK_EVERY
        if tolerance:
            error = scaling.column_error().item()
            if error <= tolerance:
                break
            scaling.exponent.fill_(-relaxation.update(error))
    else:
        scaling.iterate(iterations - done)
        done = iterations
    return scaling.allocation(kernel), done


def _sinkhorn_log(
    log_kernel: torch.Tensor,
    prior: torch.Tensor,
    iterations: int,
    tolerance: float,
    relaxation: _Overrelaxation | None = None,
) -> tuple[torch.Tensor, int]:
    """Log-domain scalings (small epsilon): logsumexp instead of products, nothing overflows.

    Over-relaxed, log x = (1 - omega) log x + omega log x_plain with x = v / prior (finite where
    the prior is 0), and log u likewise.
    """
    num_samples = log_kernel.shape[1]
    log_prior = prior.log()  # -inf where the prior is 0
    log_row = -math.log(num_samples)
    log_u = torch.full(log_kernel.shape[:2], log_row, device=log_kernel.device)  # (V, N)
    log_x = torch.zeros(log_kernel.shape[0], log_kernel.shape[2], device=log_kernel.device)  # (V, K)
    relaxation = relaxation or _Overrelaxation(enabled=False)
    omega = 1.0
    for done in range(1, iterations + 1):
        plain_x = -torch.logsumexp(log_kernel + log_u[..., None], dim=1)
        log_x = plain_x if omega == 1.0 else torch.lerp(log_x, plain_x, omega)
        log_v = log_prior + log_x  # (V, K)
        plain_u = log_row - torch.logsumexp(log_kernel + log_v[:, None, :], dim=2)
        plain_row = omega == 1.0 or _plain_row_step(done - 1, iterations)
        log_u = plain_u if plain_row else torch.lerp(log_u, plain_u, omega)  # (V, N)
        if tolerance and done % _CHECK_EVERY == 0:
            column_mass = (log_kernel + log_u[..., None] + log_v[:, None, :]).exp().sum(dim=1)
            error = (column_mass - prior).abs().max().item()
            if error <= tolerance:
                break
            omega = relaxation.update(error)
    allocation = (log_kernel + log_u[..., None] + log_v[:, None, :] + math.log(num_samples)).exp()
    return allocation, done
