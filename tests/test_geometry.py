from __future__ import annotations

import pytest
import torch

from gh_hf.geometry import simplex_etf


@pytest.mark.parametrize(("num_anchors", "dim"), [(2, 1), (10, 128), (100, 128), (129, 128), (5, 4)])
def test_simplex_etf_properties(num_anchors, dim):
    anchors = simplex_etf(num_anchors, dim).double()
    assert anchors.shape == (num_anchors, dim)
    gram = anchors @ anchors.T
    expected = torch.full_like(gram, -1.0 / (num_anchors - 1))
    expected.fill_diagonal_(1.0)
    torch.testing.assert_close(gram, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(anchors.sum(0), torch.zeros(dim, dtype=torch.float64), atol=1e-6, rtol=0)


def test_simplex_etf_is_deterministic_per_seed():
    assert torch.equal(simplex_etf(10, 16, seed=3), simplex_etf(10, 16, seed=3))
    assert not torch.allclose(simplex_etf(10, 16, seed=3), simplex_etf(10, 16, seed=4))


def test_simplex_etf_too_many_anchors_names_the_numbers():
    with pytest.raises(ValueError, match=r"num_anchors=130.*dim >= .*129.*dim=128"):
        simplex_etf(130, 128)
