"""Sinkhorn's per-device kernels and its iteration count, against the float64 reference."""

from __future__ import annotations

import importlib

import pytest
import torch

from gh_hf.losses import GHLoss, sinkhorn
from gh_hf.losses.sinkhorn import _OMEGA_MAX, _Overrelaxation, _sinkhorn_graphed, _sinkhorn_matvec
from gh_hf.training.paper_reference import paper_bank_update, paper_sinkhorn
from gh_hf.training.step_benchmark import peaked_scores, scores_needing
from tests.test_losses import _long_tailed_prior, _reference_sinkhorn, _scores


def _column_error(allocation, prior):
    """max_k |column mass_k - prior_k| of an (N, K) allocation q = N Q."""
    return (
        (allocation.double().sum(0) / allocation.shape[0] - prior.double() / prior.sum()).abs().max().item()
    )


def _two_view_kernel():
    """The plain-domain kernel (2, 200, 12) of two peaked views (eps 0.05, rows shifted to max 0)
    and a normalised long-tailed prior, as `sinkhorn` hands them to its per-device kernels."""
    scores = torch.stack([peaked_scores(200, 12, 1.5, seed=seed) for seed in (1, 2)])
    prior = _long_tailed_prior(12)
    log_kernel = scores / 0.05
    return (log_kernel - log_kernel.amax(dim=-1, keepdim=True)).exp(), prior / prior.sum()


@pytest.mark.parametrize("iterations", [1, 7, 300])
def test_matvec_kernel_matches_reference_on_single_and_stacked_views(iterations):
    views, prior = [_scores(48, 9, seed) for seed in (4, 5)], _long_tailed_prior(9)
    # sinkhorn shifts each row's scores by its maximum before the first iteration (the shift is
    # absorbed in u, so only converged runs are shift-free): iterate by iterate, the reference
    # on the shifted scores is the same algorithm
    shifted = [view - view.amax(dim=-1, keepdim=True) for view in views]
    expected = [_reference_sinkhorn(view, prior, 0.05, iterations).float() for view in shifted]
    single, count = sinkhorn(views[0], prior, 0.05, iterations, tolerance=0.0, return_iterations=True)
    assert count == iterations
    torch.testing.assert_close(single, expected[0], atol=1e-5, rtol=1e-4)
    stacked = sinkhorn(torch.stack(views), prior, 0.05, iterations, tolerance=0.0)
    torch.testing.assert_close(stacked, torch.stack(expected), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("tolerance", [0.0, 1e-6])
def test_matvec_kernel_matches_batched_graph_kernel(tolerance):
    # The GPU path (batched products, CUDA graph) runs eagerly on CPU: both must agree, count included.
    kernel, prior = _two_view_kernel()
    graphed, graphed_count = _sinkhorn_graphed(kernel, prior, 300, tolerance)
    matvec, matvec_count = _sinkhorn_matvec(kernel.clone(), prior, 300, tolerance)  # consumes it
    assert matvec_count == graphed_count
    assert (matvec_count < 300) == (tolerance > 0)
    torch.testing.assert_close(matvec, graphed, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("tolerance", [0.0, 1e-6])
def test_matvec_kernel_numpy_and_torch_products_agree(monkeypatch, tolerance):
    # small kernels take NumPy's products, large ones torch.mv: the same iterates, count included
    module = importlib.import_module("gh_hf.losses.sinkhorn")  # the package exports the function
    kernel, prior = _two_view_kernel()
    assert 200 * 12 <= module._NUMPY_MAX_ENTRIES
    small, small_count = _sinkhorn_matvec(kernel.clone(), prior, 300, tolerance)
    monkeypatch.setattr(module, "_NUMPY_MAX_ENTRIES", 0)
    large, large_count = _sinkhorn_matvec(kernel.clone(), prior, 300, tolerance)
    assert small_count == large_count and (small_count < 300) == (tolerance > 0)
    torch.testing.assert_close(small, large, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("epsilon", [0.05, 0.01])  # the plain and the log domain
def test_sinkhorn_leaves_the_callers_scores_and_prior_untouched(epsilon):
    # sinkhorn writes its kernel and allocation in place on buffers it owns, never on its inputs
    scores, prior = _scores(64, 9, 6), _long_tailed_prior(9)
    scores_before, prior_before = scores.clone(), prior.clone()
    allocation = sinkhorn(scores, prior, epsilon, 50, tolerance=0.0)
    assert torch.equal(scores, scores_before) and torch.equal(prior, prior_before)
    assert allocation.data_ptr() != scores.data_ptr()


def test_iteration_count_is_the_first_check_that_meets_the_tolerance():
    scores, prior = peaked_scores(128, 10, 1.0, seed=3), _long_tailed_prior(10)
    allocation, count = sinkhorn(
        scores, prior, 0.05, 300, tolerance=1e-6, return_iterations=True, overrelax=False
    )
    assert count % 10 == 0 and 10 < count < 300
    assert _column_error(allocation, prior) <= 2e-6  # float32 summation adds ~1e-6
    # the previous check (count - 10 iterations) had not converged yet: the stop is not late
    shifted = scores - scores.amax(dim=-1, keepdim=True)  # as sinkhorn does, see above
    assert _column_error(_reference_sinkhorn(shifted, prior, 0.05, count - 10), prior) > 1e-6
    expected = _reference_sinkhorn(shifted, prior, 0.05, count).float()
    torch.testing.assert_close(allocation, expected, atol=1e-5, rtol=1e-4)


def test_log_domain_reports_its_iterations():
    scores, prior = _scores(32, 8, seed=6), _long_tailed_prior(8)
    _, count = sinkhorn(scores, prior, 0.01, 37, tolerance=0.0, return_iterations=True)
    assert count == 37
    allocation, count = sinkhorn(scores, prior, 0.01, 3000, return_iterations=True)
    assert count % 10 == 0 and count < 3000
    assert _column_error(allocation, prior) <= 2e-6


def test_gh_loss_records_its_last_sinkhorn_iterations():
    loss = GHLoss(sinkhorn_iterations=50, sinkhorn_tolerance=0.0)
    assert loss.last_sinkhorn_iterations == 0
    loss(_scores(16, 6, 1), _scores(16, 6, 2), torch.ones(6))
    assert loss.last_sinkhorn_iterations == 50
    scores = torch.stack([peaked_scores(64, 6, 1.0, seed=seed) for seed in (1, 2)])
    loss = GHLoss()
    loss(scores[0], scores[1], torch.ones(6))
    _, expected = sinkhorn(scores, torch.ones(6), return_iterations=True)
    assert loss.last_sinkhorn_iterations == expected > 10


def test_paper_reference_computes_the_same_allocation():
    scores, prior = _scores(40, 7, seed=7), _long_tailed_prior(7)
    expected = _reference_sinkhorn(scores, prior, 0.05, 300).float()
    torch.testing.assert_close(paper_sinkhorn(scores, prior, 0.05, 300), expected, atol=1e-5, rtol=1e-4)
    bank, scores = torch.rand(10, 7), torch.rand(3, 7)
    expected = bank.clone()
    expected[[4, 1, 8]] = 0.9 * bank[[4, 1, 8]] + 0.1 * scores
    paper_bank_update(bank, torch.tensor([4, 1, 8]), scores, 0.9)
    torch.testing.assert_close(bank, expected)


def test_peaked_scores_are_unit_rows_and_sharper_scores_need_more_iterations():
    random, peaked = peaked_scores(256, 10, 0.0), peaked_scores(256, 10, 2.0)
    torch.testing.assert_close(peaked.norm(dim=-1), torch.ones(256))
    counts = [sinkhorn(s, torch.ones(10), return_iterations=True)[1] for s in (random, peaked)]
    assert counts[0] < counts[1]
    scores, count = scores_needing(100, 256, 10)
    assert scores.shape == (2, 256, 10)
    assert 100 <= count <= 130
    # the count is plain Sinkhorn's, the paper's algorithm; gh_hf's over-relaxed one stops sooner
    assert sinkhorn(scores, torch.ones(10), return_iterations=True, overrelax=False)[1] == count
    assert sinkhorn(scores, torch.ones(10), return_iterations=True)[1] < count


def _converged(scores, prior, epsilon):
    """The solution itself: the float64 reference run far past convergence."""
    shifted = scores - scores.amax(dim=-1, keepdim=True)  # as sinkhorn does (absorbed in u)
    return _reference_sinkhorn(shifted, prior, epsilon, 5000).float()


@pytest.mark.parametrize("prior_zero", [False, True])
@pytest.mark.parametrize("epsilon", [0.05, 0.02])
def test_overrelaxed_sinkhorn_reaches_the_same_solution_in_fewer_iterations(epsilon, prior_zero):
    # scores whose plain Sinkhorn needs ~300 iterations; eps 0.02 takes the log domain. A prior
    # with a zero entry: over-relaxation works on v / prior, never on log 0.
    scores, _ = scores_needing(300, 256, 10)
    scores = scores[0] * (0.05 / epsilon) ** 0.5  # eps 0.02: a kernel range past the plain domain's
    prior = _long_tailed_prior(10)
    if prior_zero:
        prior[4] = 0.0
    plain, plain_count = sinkhorn(scores, prior, epsilon, 3000, return_iterations=True, overrelax=False)
    fast, fast_count = sinkhorn(scores, prior, epsilon, 3000, return_iterations=True)
    assert fast_count % 10 == 0 and fast_count <= plain_count / 2, (fast_count, plain_count)
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast.sum(1), torch.ones(256), atol=1e-5, rtol=0)  # rows exact
    assert _column_error(fast, prior) <= 2e-6
    expected = _converged(scores, prior, epsilon)
    # both stop at the same tolerance: each as close to the solution as the other
    fast_gap, plain_gap = ((fast - expected).abs().max().item(), (plain - expected).abs().max().item())
    assert fast_gap <= max(2 * plain_gap, 1e-4), (fast_gap, plain_gap)


def test_overrelaxed_matvec_and_graph_kernels_take_the_same_steps():
    kernel, prior = _two_view_kernel()
    plain = _sinkhorn_matvec(kernel.clone(), prior, 300, 1e-6)[1]
    relaxation = {name: _Overrelaxation(enabled=True) for name in ("graphed", "matvec")}
    graphed, graphed_count = _sinkhorn_graphed(kernel, prior, 300, 1e-6, relaxation["graphed"])
    matvec, matvec_count = _sinkhorn_matvec(kernel.clone(), prior, 300, 1e-6, relaxation["matvec"])
    assert matvec_count == graphed_count < plain
    assert relaxation["matvec"].omega == pytest.approx(relaxation["graphed"].omega, rel=1e-3)
    assert relaxation["matvec"].omega > 1
    torch.testing.assert_close(matvec, graphed, atol=1e-5, rtol=1e-4)


def test_overrelaxation_factor_follows_the_measured_rate():
    theta = 0.95  # plain Sinkhorn shrinking the error 5% an iteration: omega* = 2 / (1 + sqrt(0.05))
    relaxation = _Overrelaxation(enabled=True)
    assert relaxation.update(1.0) == 1.0  # one check: no rate yet
    omega = relaxation.update(theta**10)
    assert omega == pytest.approx(2 / (1 + 0.05**0.5))
    # at omega* SOR shrinks the error by omega* - 1 an iteration: theta read back, omega kept
    assert relaxation.update(theta**10 * (omega - 1) ** 10) == pytest.approx(omega)
    # slower than theory predicts: a larger theta, a larger omega, never above the cap
    assert _OMEGA_MAX >= relaxation.update(theta**10 * (omega - 1) ** 10 * 0.999**10) > omega
    # an error that grows: overshoot, plain Sinkhorn for the rest
    assert relaxation.update(1.0) == 1.0 and not relaxation.enabled
    assert relaxation.update(1e-3) == 1.0
    # disabled (no tolerance, or overrelax=False): always plain
    off = _Overrelaxation(enabled=False)
    assert [off.update(error) for error in (1.0, 0.5, 0.25)] == [1.0, 1.0, 1.0]


def test_without_a_tolerance_every_path_runs_plain_sinkhorn():
    # tolerance 0: iterate by iterate the paper's algorithm, over-relaxation or not
    scores, prior = peaked_scores(64, 9, 1.5, seed=8), _long_tailed_prior(9)
    shifted = scores - scores.amax(dim=-1, keepdim=True)
    for epsilon in (0.05, 0.02):
        expected = _reference_sinkhorn(shifted, prior, epsilon, 120).float()
        allocation = sinkhorn(scores, prior, epsilon, 120, tolerance=0.0)
        torch.testing.assert_close(allocation, expected, atol=1e-5, rtol=1e-4)


def test_loss_benchmark_row_reports_both_counts_and_every_timing():
    from gh_hf.training.step_benchmark import compare_gh_losses

    row = compare_gh_losses(256, 10, 100, torch.device("cpu"), repeats=1, num_train_samples=500)
    assert row["target_iterations"] == 100 and row["plain_sinkhorn_iterations"] >= 100
    assert row["sinkhorn_iterations"] < row["plain_sinkhorn_iterations"]  # over-relaxed: fewer
    for name in ("gh_loss", "gh_plain_loss", "paper_loss", "gh_bank", "paper_bank"):
        assert row[f"{name}_s"] > 0
    assert row["plain_over_gh_loss"] == row["gh_plain_loss_s"] / row["gh_loss_s"]
