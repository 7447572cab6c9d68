"GLANCE networks and stains outside the notebooks: checkpoint round trips (the mask kernel is not saved), no leakage from the hole on either Global-Net path, and the same results on a CUDA GPU."
import numpy as np
import pytest
import torch

from glancesvdd.core import load_torch, save_torch
from glancesvdd.glance.dad_head import DADHead
from glancesvdd.glance.global_net import GlobalNet, hole_masks
from glancesvdd.glance.infer import box_global_features, grid_global_features
from glancesvdd.glance.model import global_features
from glancesvdd.glance.local_net import LocalNet
from glancesvdd.patches import glance_corners
from glancesvdd.stains import add_stains


def _inputs(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 256, 256, generator=g)
    p = torch.rand(n, 3, 33, 33, generator=g)
    return x, hole_masks(glance_corners()[[0, 210, 399][:n]]), p


def test_checkpoint_round_trip(tmp_path):
    "Weights saved with core.save_torch load strictly into fresh modules and give the same outputs; the partial convolutions' all-ones kernel is a non-persistent buffer"
    torch.manual_seed(0)
    nets = dict(local=LocalNet(), glob=GlobalNet(), head=DADHead())
    assert not any('window' in k for k in nets['glob'].state_dict())
    assert len(nets['glob'].state_dict()) == 2 * 8  # weight and bias of 8 partial convolutions (Tab. 2)
    save_torch({k: m.state_dict() for k, m in nets.items()}, tmp_path/'nets.pt')
    state = load_torch(tmp_path/'nets.pt')
    torch.manual_seed(1)
    fresh = dict(local=LocalNet(), glob=GlobalNet(), head=DADHead())
    for k, m in fresh.items(): m.load_state_dict(state[k], strict=True)
    x, M, p = _inputs()
    with torch.no_grad():
        for net in (nets, fresh):
            net['z'] = (net['local'](p), net['glob'](x, M))
            net['s'] = net['head'].match_prob(*net['z'])
    assert torch.equal(nets['z'][0], fresh['z'][0]) and torch.equal(nets['z'][1], fresh['z'][1])
    assert torch.equal(nets['s'], fresh['s'])


def test_no_leakage_all_holes():
    """On the CPU, all 400 holes of the GLANCE grid: the box path (14_glance_infer) equals the plain one, and nothing under a
    hole reaches Z_g. Hole pixels set to +-1e30 (random signs) or to noise: the plain path gives Z_g bit for bit (the first
    partial convolution multiplies them by 0), for every hole; the box path, one unmasked pass per image, gives the clean
    image's Z_g for every 8th hole and the four corners. A box one output too small, or a hole left in the input, puts
    1e30 into Z_g; noise alone would move it by about 1e-5 (nbs/11_global_net)."""
    torch.manual_seed(0)
    G, x, corners = GlobalNet().eval(), torch.rand(3, 256, 256), glance_corners()
    ref = grid_global_features(G, x, corners)  # (400, 128): one masked pass per hole, the clean image
    torch.testing.assert_close(box_global_features(G, x, corners), ref, rtol=1e-4, atol=1e-6)
    g = torch.Generator().manual_seed(1)
    fills = dict(huge=lambda n: 1e30 * (2 * (torch.rand(n, 3, 256, 256, generator=g) < .5).float() - 1),
                 noise=lambda n: torch.rand(n, 3, 256, 256, generator=g))
    few = sorted({*range(0, 400, 8), 19, 380, 399})  # the four corners of the image among them
    for name, fill in fills.items():
        for k in range(0, 400, 100):  # the plain path, every hole
            M = hole_masks(corners[k:k + 100])  # (100, 1, 256, 256), 0 on the hole
            filled = x * M + fill(len(M)) * (1 - M)  # each image with its own hole filled
            with torch.no_grad(): z = global_features(G, filled, M)
            assert torch.equal(z, ref[k:k + 100]), (name, k)
        M = hole_masks(corners[few])
        filled = x * M + fill(len(M)) * (1 - M)
        z = torch.cat([box_global_features(G, xf, corners[i:i + 1]) for xf, i in zip(filled, few)])
        torch.testing.assert_close(z, ref[few], rtol=1e-4, atol=1e-6, msg=lambda m: f'{name}: {m}')


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_matches_cpu():
    "On the GPU: the same features as on the CPU, no leakage from the hole, stains identical to the CPU ones"
    torch.manual_seed(0)
    local, glob, head = LocalNet(), GlobalNet(), DADHead()
    x, M, p = _inputs()
    with torch.no_grad():
        cpu = (local(p), glob(x, M))
        local, glob, head = local.cuda(), glob.cuda(), head.cuda()
        xc, Mc, pc = x.cuda(), M.cuda(), p.cuda()
        gpu = (local(pc), glob(xc, Mc))
        for a, b in zip(cpu, gpu): torch.testing.assert_close(b.cpu(), a, rtol=1e-3, atol=1e-4)
        noisy = xc * Mc + torch.rand_like(xc) * (1 - Mc)
        torch.testing.assert_close(glob(noisy, Mc), gpu[1], rtol=0, atol=1e-6)
        assert torch.isfinite(head.match_prob(*gpu)).all()
        with torch.autocast('cuda', dtype=torch.float16):
            assert torch.isfinite(glob(xc, Mc)).all()
    s_cpu = add_stains(p, np.random.default_rng(0))
    s_gpu = add_stains(pc, np.random.default_rng(0))
    assert s_gpu.device.type == 'cuda'
    torch.testing.assert_close(s_gpu.cpu(), s_cpu, rtol=0, atol=1e-6)
