"""The exact searches' rounding bounds can fail: a bank of twin rows, each pair closer in distance to its query than the
expanded form ||q||^2 + ||b||^2 - 2 q.b resolves at these norms. Without the bounds (nn_brute's `+ 2 * err`, the CPU index's
float32 error term, the GPU scan's rounding_bound) the searches pick the farther twin for many queries."""
import numpy as np
import pytest
import torch

from glancesvdd.svdd.infer import nn_brute, build_index, search_index


def twin_bank(n=2000, D=64, scale=4e6, seed=0):
    """Queries with coordinates of about 4e6 and, per query, two rows near it (squared distance about 64) whose squared distances
    differ by about 1: float64 sums of the expanded form err by units at these norms (1e15), direct differences do not"""
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((n, D)) * scale).astype(np.float32)
    a = (q + rng.standard_normal((n, D))).astype(np.float32)
    b = (a + 0.1 * rng.standard_normal((n, D))).astype(np.float32)             # a twin of a: 0 or 1 float32 step (0.25) per coordinate
    other = (rng.standard_normal((3000, D)) * scale).astype(np.float32)
    bank = np.concatenate([a, b, other])
    d = [((q.astype(np.float64) - x.astype(np.float64)) ** 2).sum(1) for x in (a, b)]   # exact: float32 differences are exact in float64
    keep = d[0] != d[1]                                                          # exact ties: either row is right
    return torch.from_numpy(q[keep]), torch.from_numpy(bank), torch.from_numpy((np.where(d[0] < d[1], 0, n) + np.arange(n))[keep])


def test_brute_force_bound():
    q, bank, truth = twin_bank()
    d, i = nn_brute(q, bank)
    assert torch.equal(i, truth)
    assert torch.equal(d, (q.double() - bank[truth].double()).norm(dim=1))


@pytest.mark.parametrize('block', [2048, 1])   # 1: every row its own block, so that twins fall in blocks judged apart
def test_index_bound(block):
    q, bank, truth = twin_bank(n=600)
    d, i = search_index(build_index(bank, block=block), q)
    assert torch.equal(i, truth)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_gpu_bound():
    from glancesvdd.svdd.gpu_search import gpu_bank, nn_gpu
    q, bank, truth = twin_bank()
    assert torch.equal(nn_gpu(q, gpu_bank(bank.cuda()))[1].cpu(), truth)
