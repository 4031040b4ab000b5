"""The losses against slow references written from DESIGN.md section 2."""

from __future__ import annotations

import math

import pytest
import torch

from gh_hf.losses import GHLoss, focal_nt_xent, nt_xent, sinkhorn, swapped_prediction


def _reference_nt_xent(z1, z2, temperature, gamma=None):
    """Loop over the 2N views: -log p(positive), p a softmax over every other view."""
    views = torch.cat([z1, z2]).double()
    views = views / views.norm(dim=1, keepdim=True)
    n = z1.shape[0]
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(math.exp(views[i] @ views[j] / temperature) for j in range(2 * n) if j != i)
        p = math.exp(views[i] @ views[positive] / temperature) / denominator
        weight = 1.0 if gamma is None else (1 - p) ** gamma
        losses.append(-weight * math.log(p))
    return sum(losses) / len(losses)


def test_nt_xent_matches_reference():
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    assert nt_xent(z1, z2, 0.2).item() == pytest.approx(_reference_nt_xent(z1, z2, 0.2), rel=1e-5)
    assert nt_xent(z1, z2, 0.5).item() == pytest.approx(_reference_nt_xent(z1, z2, 0.5), rel=1e-5)


def test_per_sample_reduction_averages_each_images_two_views():
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    per_sample = nt_xent(z1, z2, 0.2, reduction="per_sample")
    assert per_sample.shape == (5,)
    torch.testing.assert_close(per_sample.mean(), nt_xent(z1, z2, 0.2))
    # Swapping the views of one image changes nothing for it.
    torch.testing.assert_close(nt_xent(z2, z1, 0.2, reduction="per_sample"), per_sample)
    with pytest.raises(ValueError, match="reduction"):
        nt_xent(z1, z2, reduction="sum")


def test_focal_nt_xent_matches_reference():
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    expected = _reference_nt_xent(z1, z2, 0.2, gamma=2.0)
    assert focal_nt_xent(z1, z2, 0.2, 2.0).item() == pytest.approx(expected, rel=1e-5)
    # gamma = 0 is plain NT-Xent.
    assert focal_nt_xent(z1, z2, 0.2, 0.0).item() == pytest.approx(nt_xent(z1, z2, 0.2).item(), rel=1e-6)


def _reference_sinkhorn(scores, prior, epsilon, num_iters):
    """Plain-exp Sinkhorn-Knopp in float64, straight from the marginal constraints."""
    kernel = torch.exp(scores.double() / epsilon)
    n = scores.shape[0]
    row_mass, col_mass = torch.full((n,), 1.0 / n, dtype=torch.float64), prior.double() / prior.sum()
    u, v = torch.ones(n, dtype=torch.float64), torch.ones(scores.shape[1], dtype=torch.float64)
    for _ in range(num_iters):
        v = col_mass / (kernel.T @ u)
        u = row_mass / (kernel @ v)
    return n * u[:, None] * kernel * v[None, :]


def _scores(n, k, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, k, generator=generator), dim=-1)


def _long_tailed_prior(k):
    return torch.tensor([0.5**i for i in range(k)]) + 0.01


def test_sinkhorn_marginals_with_non_uniform_prior():
    scores, prior = _scores(64, 10), _long_tailed_prior(10)
    allocation = sinkhorn(scores, prior, epsilon=0.05, iterations=300)
    assert allocation.dtype == torch.float32
    torch.testing.assert_close(allocation.sum(1), torch.ones(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(allocation.sum(0) / 64, prior / prior.sum(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("epsilon", [0.05, 0.02])  # 0.05: plain-domain path; 0.02: log-domain path
def test_sinkhorn_agrees_with_plain_exp_reference(epsilon):
    scores, prior = _scores(32, 8, seed=1), _long_tailed_prior(8)
    scores[0] = torch.nn.functional.one_hot(torch.tensor(2), 8) - 0.5  # widen the range of scores
    expected = _reference_sinkhorn(scores, prior, epsilon, 300).float()
    torch.testing.assert_close(
        sinkhorn(scores, prior, epsilon, 300, tolerance=0.0), expected, atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(sinkhorn(scores, prior, epsilon, 300), expected, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sinkhorn_is_finite_at_small_epsilon_and_bf16(dtype):
    scores = _scores(128, 100)
    scores[0] = torch.nn.functional.one_hot(torch.tensor(3), 100)  # a score of 1: exp(1/0.01) overflows
    assert torch.isinf(torch.exp(scores / 0.01)).any()
    scores = scores.to(dtype)
    allocation = sinkhorn(scores, torch.ones(100), epsilon=0.01, iterations=300)
    assert torch.isfinite(allocation).all()
    assert allocation.dtype == torch.float32
    torch.testing.assert_close(allocation.sum(1), torch.ones(128), atol=1e-5, rtol=0)


def test_sinkhorn_early_stop_matches_full_run_within_tolerance():
    scores, prior = _scores(256, 10, seed=3), _long_tailed_prior(10)
    full = sinkhorn(scores, prior, 0.05, 300, tolerance=0.0)
    early = sinkhorn(scores, prior, 0.05, 300, tolerance=1e-6)
    # the stop test is |mass - prior| <= 1e-6 on the scalings; summing the float32 allocation
    # again adds rounding of the same order (1.07e-6 seen with OMP_NUM_THREADS=1)
    torch.testing.assert_close(early.sum(0) / 256, prior / prior.sum(), atol=2e-6, rtol=0)
    torch.testing.assert_close(early, full, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="tolerance"):
        sinkhorn(scores, prior, tolerance=-1.0)


def test_sinkhorn_zero_prior_anchor_gets_no_mass():
    prior = torch.tensor([0.5, 0.3, 0.0, 0.2])
    for epsilon in (0.05, 0.01):
        allocation = sinkhorn(_scores(16, 4), prior, epsilon)
        assert torch.isfinite(allocation).all() and allocation[:, 2].abs().max() == 0


def test_sinkhorn_solves_stacked_views_independently():
    s1, s2, prior = _scores(40, 6, 1), _scores(40, 6, 2), _long_tailed_prior(6)
    stacked = sinkhorn(torch.stack([s1, s2]), prior)
    assert stacked.shape == (2, 40, 6)
    torch.testing.assert_close(stacked[0], sinkhorn(s1, prior))
    torch.testing.assert_close(stacked[1], sinkhorn(s2, prior))
    with pytest.raises(ValueError, match="scores must have shape"):
        sinkhorn(torch.zeros(4), torch.ones(4))


def test_sinkhorn_has_no_gradient():
    scores = _scores(8, 4).requires_grad_()
    assert not sinkhorn(scores, torch.ones(4)).requires_grad


def test_sinkhorn_rejects_bad_arguments():
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(_scores(4, 3), torch.ones(3), epsilon=0.0)
    with pytest.raises(ValueError, match="prior must have shape"):
        sinkhorn(_scores(4, 3), torch.ones(5))


def _reference_gh_loss(s1, s2, prior, epsilon, iters, temperature):
    q1 = _reference_sinkhorn(s1, prior, epsilon, iters)
    q2 = _reference_sinkhorn(s2, prior, epsilon, iters)
    total = 0.0
    for q, s in ((q1, s2), (q2, s1)):
        log_p = torch.log_softmax(s.double() / temperature, dim=-1)
        total += -sum((q[i] * log_p[i]).sum().item() for i in range(s.shape[0])) / s.shape[0]
    return total


def test_gh_loss_matches_reference():
    s1, s2, prior = _scores(16, 6, 1), _scores(16, 6, 2), _long_tailed_prior(6)
    value = GHLoss(epsilon=0.05, sinkhorn_iterations=300, temperature=0.1)(s1, s2, prior)
    assert value.item() == pytest.approx(_reference_gh_loss(s1, s2, prior, 0.05, 300, 0.1), rel=1e-5)


def test_swapped_prediction_gradient():
    s1 = _scores(5, 4, 1).double().requires_grad_()
    s2 = _scores(5, 4, 2).double().requires_grad_()
    q1 = torch.softmax(torch.randn(5, 4, dtype=torch.float64), -1)
    q2 = torch.softmax(torch.randn(5, 4, dtype=torch.float64), -1)

    def loss(a, b):
        log_p1, log_p2 = (a / 0.1).log_softmax(-1), (b / 0.1).log_softmax(-1)
        return -(q1 * log_p2).sum(-1).mean() - (q2 * log_p1).sum(-1).mean()

    # Autograd of the float64 formula is right (gradcheck), and the library's function matches it.
    assert torch.autograd.gradcheck(loss, (s1, s2))
    expected = torch.autograd.grad(loss(s1, s2), (s1, s2))
    got = torch.autograd.grad(swapped_prediction(s1, s2, q1.float(), q2.float(), 0.1), (s1, s2))
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


def test_gh_loss_gradient_treats_allocation_as_constant():
    s1 = _scores(6, 5, 1).requires_grad_()
    s2 = _scores(6, 5, 2).requires_grad_()
    prior = _long_tailed_prior(5)
    loss_fn = GHLoss()
    grads = torch.autograd.grad(loss_fn(s1, s2, prior), (s1, s2))
    q1, q2 = loss_fn.allocate(s1, prior), loss_fn.allocate(s2, prior)
    expected = torch.autograd.grad(swapped_prediction(s1, s2, q1, q2, 0.1), (s1, s2))
    for e, g in zip(expected, grads, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"epsilon": 0}, "epsilon"),
        ({"sinkhorn_iterations": 0}, "sinkhorn_iterations"),
        ({"temperature": -1}, "temperature"),
    ],
)
def test_gh_loss_validates_hyperparameters(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GHLoss(**kwargs)


def test_nt_xent_validates_hyperparameters():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(z, z, temperature=0)
    with pytest.raises(ValueError, match="gamma"):
        focal_nt_xent(z, z, 0.2, gamma=-1)
