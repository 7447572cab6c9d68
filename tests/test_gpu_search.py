"""The exact GPU search (glancesvdd.svdd.gpu_search): on a CUDA GPU at a bank of bottle's size, against the float64 brute force.
Without a GPU the notebook 22a_svdd_gpu_search runs the same kernels in Triton's interpreter (nbdev_test)."""
import pytest
import torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


@pytest.mark.gpu
@CUDA
def test_nn_gpu_equals_brute_force():
    from glancesvdd.svdd.gpu_search import gpu_bank, nn_gpu
    from glancesvdd.svdd.infer import nn_brute
    g = torch.Generator().manual_seed(0)
    bank = torch.tanh(2 * torch.randn(300_000, 64, generator=g)); bank[1000:3000] = bank[5]   # 2,001 equal rows
    q = torch.tanh(2 * torch.randn(4000, 64, generator=g)); q[:50] = bank[5]; q[50:100] = bank[:50] + 1e-5
    d, i = nn_gpu(q, gpu_bank(bank.cuda()), stats=(st := {}))
    d0, i0 = nn_brute(q, bank.cuda())
    assert torch.equal(d.cpu(), d0.cpu())                                       # float64, measured the same way
    tie = i.cpu() != i0.cpu()
    assert torch.equal((q[tie].double() - bank[i.cpu()[tie]].double()).norm(dim=1), d0.cpu()[tie])   # a different row is a tie
    assert st['rechecked'] >= 50                                                 # the equal rows went to the float64 recheck
