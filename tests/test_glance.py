"GLANCE: smoke training on synthetic data (Stage A with an untrained teacher, asked for; Stage B), exact resume, evaluation (trained beats untrained), teacher errors, IDW, inference against a per-patch loop, the CIFAR-10 variant."
import pickle, warnings
from dataclasses import replace
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from glancesvdd.core import GlanceSvddError, load_json, load_torch
from glancesvdd.data import make_synthetic_mvtec
from glancesvdd.metrics import image_auroc, pixel_auroc
from glancesvdd.patches import glance_corners, patch_centres
from glancesvdd.runs import load_scores, latest_checkpoint
import glancesvdd.glance.train as gt
from glancesvdd.glance.config import GlanceConfig, smoke_config
from glancesvdd.glance.train import train_glance, train_glance_cifar10, load_teacher, TEACHER_URL, TEACHER_FILE
from glancesvdd.glance.model import save_glance
from glancesvdd.glance.infer import infer_glance, infer_glance_cifar10, fuse_idw, idw_weights, score_image
from glancesvdd.glance.local_net import LocalNet
from glancesvdd.glance.global_net import GlobalNet
from glancesvdd.glance.dad_head import DADHead, MATCH

SEED, NTRAIN = 1, 8  # data and training seed, normal training images (see test_trained_beats_untrained)

pytestmark = pytest.mark.filterwarnings('ignore:.*(UNTRAINED|SKIPPED).*:UserWarning')  # asked for on purpose here


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "Smoke runs are many small operations: on a shared 2-core machine, OpenMP's waiting threads made Stage A 7x slower"
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    "Synthetic MVTec layout: `brick` stands in for ImageNet, `gravel` is the category (8 normal + 20 defective test images)"
    return make_synthetic_mvtec(tmp_path_factory.mktemp('data'), categories=('gravel', 'brick'), n_train=NTRAIN, n_test_good=8,
                                n_test_defect=4, seed=SEED)


def smoke(root, **kw):
    return smoke_config(GlanceConfig(category='gravel', data_root=str(root), imagenet_dir=str(root/'brick'/'train'),
                                     teacher_weights='untrained', device='cpu', seed=SEED), **kw)


@pytest.fixture(scope='module')
def trained(root, tmp_path_factory):
    cfg = smoke(root)
    return cfg, train_glance(cfg, tmp_path_factory.mktemp('runs')/'trained', progress=False)


def test_train_records_what_was_used(trained):
    cfg, run = trained
    rec = load_json(run/'train.json')
    assert (rec['teacher'], rec['imagenet']) == ('untrained', cfg.imagenet_dir)
    stage_dir = Path(rec['imagenet_stage']['cache'])
    assert stage_dir == run/'checkpoints'/'imagenet_stage'/rec['imagenet_stage']['key']   # a run folder outside a runs root keeps its own
    for ck, iters in [(stage_dir/'checkpoints', cfg.iters_imagenet), (run/'checkpoints'/'finetune', cfg.iters_finetune),
                      (run/'checkpoints'/'global_net', cfg.iters)]:
        assert latest_checkpoint(ck).name == f'iter_{iters:08d}.pt'
    assert np.isfinite(list(rec['global_losses'].values())).all() and set(rec['global_losses']) == {'loss', 'l_iad', 'l_dad'}


def test_imagenet_stage_once_per_runs_root(root, tmp_path):
    "Two categories of one runs root share one ImageNet stage; loading it gives the Local-Net that training it gives"
    from glancesvdd.runs import run_path
    runs = tmp_path/'runs'
    cfg_a = smoke(root, iters=8)
    run_a = train_glance(cfg_a, run_path('glance', 'gravel', SEED, runs), progress=False)
    cfg_b = replace(cfg_a, category='brick')
    run_b = train_glance(cfg_b, run_path('glance', 'brick', SEED, runs), progress=False)
    ra, rb = load_json(run_a/'train.json'), load_json(run_b/'train.json')
    assert ra['imagenet_stage'] == rb['imagenet_stage'] and Path(ra['imagenet_stage']['cache']) == runs/'glance'/'_imagenet'/ra['imagenet_stage']['key']
    assert [p.name for p in (runs/'glance'/'_imagenet').iterdir()] == [ra['imagenet_stage']['key']]   # trained once
    alone = train_glance(cfg_b, tmp_path/'alone', progress=False)       # the same config, its own ImageNet stage
    a, b = load_torch(alone/'glance.pt'), load_torch(run_b/'glance.pt')
    for k in a['local']: assert torch.equal(a['local'][k], b['local'][k]), k
    assert (runs/'glance'/'_imagenet'/ra['imagenet_stage']['key']/'local.pt').stat().st_mtime < (run_b/'glance.pt').stat().st_mtime


class Crash(Exception): pass

def crash_after(n, f):
    "`f` that raises Crash from its (n+1)-th call on: an interruption in the middle of a stage"
    calls = []
    def g(*a, **k):
        calls.append(1)
        if len(calls) > n: raise Crash
        return f(*a, **k)
    return g


def test_resume_is_exact(root, tmp_path, monkeypatch):
    "Interrupted in Stage A's fine-tune, then in Stage B, then resumed: the same weights as the uninterrupted run"
    cfg = smoke(root, iters=16, batch=4)
    ref, run = train_glance(cfg, tmp_path/'ref', progress=False), tmp_path/'run'
    with monkeypatch.context() as m:  # crop_patches: once per fine-tune batch (and once per Stage-B batch)
        m.setattr(gt, 'crop_patches', crash_after(cfg.iters_finetune - 2, gt.crop_patches))
        with pytest.raises(Crash): train_glance(cfg, run, progress=False)
    assert 0 < int(latest_checkpoint(run/'checkpoints'/'finetune').stem[5:]) < cfg.iters_finetune
    with monkeypatch.context() as m:  # stain_layers: once per Stage-B batch
        m.setattr(gt, 'stain_layers', crash_after(cfg.iters - 3, gt.stain_layers))
        with pytest.raises(Crash): train_glance(cfg, run, progress=False)
    assert 0 < int(latest_checkpoint(run/'checkpoints'/'global_net').stem[5:]) < cfg.iters
    train_glance(cfg, run, progress=False)
    a, b = load_torch(ref/'glance.pt'), load_torch(run/'glance.pt')
    for net in ('local', 'global_net', 'head'):
        for k in a[net]: assert torch.equal(a[net][k], b[net][k]), (net, k)


def test_run_folder_refuses_other_config(trained):
    cfg, run = trained
    with pytest.raises(GlanceSvddError, match='lambda_t'): train_glance(replace(cfg, lambda_t=0.5), run, progress=False)


def test_trained_beats_untrained(root, trained, tmp_path):
    """Pixel AUROC on the synthetic test set: the trained smoke model beats the same networks at initialisation by 0.05.

    The margin holds at every training seed tried, not only at the pinned SEED: over seeds 0-6 of this set-up (same data,
    l_DAD the mean over the 2B pairs) the trained model's pixel AUROC was higher by 0.07 to 0.19, while with its maps
    transposed (the re-implementation's IDW pitfall, 14_glance_infer) the margin was 0.02 at best. The image AUROC (max of
    the map, 8 normal vs 20 defective images) is not asserted: a few hundred CPU iterations from an untrained teacher leave it
    near chance, and at seed 6 the trained model's (0.51) was below the untrained one's (0.66)."""
    cfg, run = trained
    torch.manual_seed(cfg.seed)
    save_glance(tmp_path/'untrained', LocalNet(), GlobalNet(), DADHead())
    res = {}
    for name, r in [('trained', run), ('untrained', tmp_path/'untrained')]:
        infer_glance(cfg, r, progress=False)
        s = load_scores(r)
        assert s['maps'].shape == (len(s['labels']), 256, 256) and s['s_iad'].shape == (len(s['labels']), cfg.grid**2)
        np.testing.assert_allclose(s['s'], cfg.lambda_s * s['s_iad'] + (1 - cfg.lambda_s) * s['s_dad'], rtol=1e-5)
        np.testing.assert_allclose(s['image_scores'], s['maps'].reshape(len(s['maps']), -1).max(1), rtol=1e-6)
        res[name] = image_auroc(s['image_scores'], s['labels']), pixel_auroc(s['maps'], s['masks'])
    print(res)
    assert res['trained'][1] >= res['untrained'][1] + 0.05, res


@torch.no_grad()
def test_stage_b_global_net_sees_only_the_context(root, trained):
    """In Stage B's batches the Global-Net reads the image around the patch and nothing of the patch itself: noise painted into
    the holes leaves Z_g exactly unchanged, noise outside them changes it. A hole that leaks (a mask without the hole, a partial
    convolution that does not mask its input) fails the first half; a Global-Net blind to its input fails the second."""
    from glancesvdd.data import load_split
    from glancesvdd.glance.train import StainedPairs
    from glancesvdd.glance.model import global_features, load_glance
    from glancesvdd.glance.config import _stains
    cfg, run = trained
    _, G, _ = load_glance(run, 'cpu')
    images = load_split(root, 'gravel', 'train', progress=False)['images']
    b = StainedPairs(images, 8, 0, cfg.patch_size, **_stains(cfg))[3]
    noise = torch.rand_like(b['x'])
    z = global_features(G, b['x'], b['mask'])
    assert torch.equal(global_features(G, b['x'] * b['mask'] + noise * (1 - b['mask']), b['mask']), z)   # inside the holes
    assert (global_features(G, b['x'] * (1 - b['mask']) + noise * b['mask'], b['mask']) - z).abs().max() > 1e-3   # around them
    assert (b['mask'] == 0).sum() == 8 * cfg.patch_size ** 2                                        # one 33 x 33 hole per image


def test_teacher_errors(tmp_path, monkeypatch):
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path/'other.pth')
    with pytest.raises(GlanceSvddError, match='not a torchvision ResNet-18'): load_teacher(str(tmp_path/'other.pth'))
    with pytest.raises(GlanceSvddError, match='missing.pth is not a file') as e: load_teacher(str(tmp_path/'missing.pth'))
    assert TEACHER_URL in str(e.value)
    monkeypatch.setattr(gt.ResNet18_Weights, 'get_state_dict', lambda *a, **k: (_ for _ in ()).throw(URLError('no network')))
    with pytest.raises(GlanceSvddError) as e: load_teacher('torchvision')
    assert TEACHER_URL in str(e.value) and TEACHER_FILE in str(e.value) and 'no network' in str(e.value)
    from torchvision.models import resnet18
    net = resnet18(weights=None); torch.save(net.state_dict(), tmp_path/'r18.pth')  # a local weights file loads
    assert torch.equal(load_teacher(str(tmp_path/'r18.pth')).resnet.conv1.weight, net.conv1.weight.detach())


def test_idw():
    centres = patch_centres(glance_corners(), 33)
    s = torch.rand(3, 400, generator=torch.Generator().manual_seed(0))
    maps = fuse_idw(s, centres)
    ij = torch.as_tensor(centres).long()
    torch.testing.assert_close(maps[:, ij[:, 0], ij[:, 1]], s)  # exact at the centres
    torch.testing.assert_close(fuse_idw(torch.full((1, 400), 2.5), centres), torch.full((1, 256, 256), 2.5))
    assert idw_weights(centres) is idw_weights(centres.copy())  # computed once per geometry
    pts, vals = np.array([[0., 0.], [3., 4.], [5.5, 1.]]), np.array([2., -1., 3.])
    ref = np.empty((6, 7))
    for r in range(6):
        for c in range(7):
            d = np.hypot(pts[:, 0] - r, pts[:, 1] - c)
            ref[r, c] = vals[d == 0][0] if (d == 0).any() else (vals * d**-5.).sum() / (d**-5.).sum()
    np.testing.assert_allclose(fuse_idw(torch.tensor(vals[None]), pts, (6, 7))[0].numpy(), ref, rtol=1e-5)


def test_inference_equals_per_patch_loop():
    """`score_image` against a loop over patches, one patch and one mask at a time, straight from the formulas.

    At PyTorch's default initialisation Z_g is about 0.04 and removing the hole moves s_dad by less than 1e-6, so a check
    there cannot see a hole that leaks. Here the two checked patches hold black-and-white pixels (0 and 2) and the last
    Global-Net layer and the head's first are scaled up 30-fold: the same loop *without* the hole then lands more than 20
    tolerances away from the loop with it, for both terms (measured: 100-1000), while the box path stays within float32
    rounding (2e-7 relative) of the loop."""
    torch.manual_seed(1)
    L, G, C = LocalNet().eval(), GlobalNet().eval(), DADHead().eval()
    with torch.no_grad():
        for w in (G.pconv4.weight, G.pconv4.bias, C.fc0.weight): w.mul_(30)
    x, corners, checked = torch.rand(3, 256, 256), glance_corners(), (3, 210)
    for i in checked:
        r, c = corners[i]
        x[:, r:r + 33, c:c + 33] = 2. * (torch.rand(3, 33, 33) < .5)
    sc = score_image(L, G, C, x, corners)
    norm = lambda t: (t - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    tol = dict(s_iad=dict(rtol=1e-5, atol=0.), s_dad=dict(rtol=0., atol=1e-6))  # s_dad lies in (0, 1): absolute
    for i in checked:
        r, c = corners[i]
        hole = torch.ones(1, 1, 256, 256); hole[..., r:r + 33, c:c + 33] = 0
        ref, leak = {}, {}  # leak: what a path whose Global-Net saw the patch would give
        with torch.no_grad():
            z_l = L(norm(x[None, :, r:r + 33, c:c + 33])).flatten(1)
            for out, m in ((ref, hole), (leak, torch.ones_like(hole))):
                z_g = G(norm(x[None]), m).flatten(1)
                out['s_iad'], out['s_dad'] = (z_l - z_g).pow(2).mean(), 1 - C(z_l, z_g).softmax(1)[0, MATCH]
        for k, t in tol.items():
            torch.testing.assert_close(sc[k][i], ref[k], **t)
            assert (leak[k] - ref[k]).abs() > 20 * (t['atol'] + t['rtol'] * ref[k].abs()), (i, k, leak[k].item(), ref[k].item())
        torch.testing.assert_close(sc['s'][i], 0.8 * ref['s_iad'] + 0.2 * ref['s_dad'], rtol=1e-5, atol=1e-6)


def write_cifar(root, n_train=3, n_test=2, seed=0):
    "A tiny set in CIFAR-10's own format (pickled dicts under cifar-10-batches-py/): n per class per batch"
    d = Path(root)/'cifar-10-batches-py'; d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name, n in [(f'data_batch_{k}', n_train) for k in range(1, 6)] + [('test_batch', n_test)]:
        labels = [c for c in range(10) for _ in range(n)]
        (d/name).write_bytes(pickle.dumps({'data': rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), 'labels': labels}))
    names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    (d/'batches.meta').write_bytes(pickle.dumps({'label_names': names}))
    return Path(root)


def test_cifar10_variant(tmp_path):
    cfg = smoke_config(GlanceConfig.cifar10('cat', data_root=str(write_cifar(tmp_path/'cifar')), teacher_weights='untrained', imagenet_dir='skip',
                                            device='cpu', cifar_verify=False), iters=4, batch=4)
    run = train_glance_cifar10(cfg, tmp_path/'run', progress=False)
    assert load_json(run/'train.json')['imagenet'] == 'skipped'
    infer_glance_cifar10(cfg, run, progress=False)
    s = load_scores(run)
    assert s['image_scores'].shape == (20,) and s['labels'].sum() == 18 and (s['targets'][s['labels'] == 0] == 3).all()
    np.testing.assert_allclose(s['image_scores'], cfg.lambda_s * s['s_iad'] + (1 - cfg.lambda_s) * s['s_dad'], rtol=1e-5)
    # Each image's score is the formula's for the pair (the image at 33x33, the image at 256x256 with an all-ones mask),
    # in the order of the labels; a hole in the mask, a swapped size or a shuffled order would each change it.
    from torchvision.transforms.functional import resize
    from glancesvdd.glance.model import load_glance
    from glancesvdd.data import cifar10_images
    L, G, C = load_glance(run, 'cpu')
    x, labels, _ = cifar10_images(cfg.data_root, 'cat', 'test', verify=False)
    norm = lambda t: (t - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        z_l = L(norm(resize(x, [33, 33], antialias=True))).flatten(1)
        z_g = G(norm(resize(x, [256, 256], antialias=True)), torch.ones(len(x), 1, 256, 256)).flatten(1)
        want = 0.8 * (z_l - z_g).pow(2).mean(1) + 0.2 * (1 - C(z_l, z_g).softmax(1)[:, MATCH])
    np.testing.assert_array_equal(s['labels'], labels.numpy())
    np.testing.assert_allclose(s['image_scores'], want.numpy(), rtol=1e-5, atol=1e-7)
