"Patch SVDD: parity with the official release, dense = per-patch, exact search, resume, collapse, and a CPU smoke run."
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from glancesvdd.core import GlanceSvddError, load_json, load_torch
from glancesvdd.data import make_synthetic_mvtec
from glancesvdd.metrics import evaluate_run
from glancesvdd.runs import latest_checkpoint, load_scores
from glancesvdd.svdd import train as T
from glancesvdd.svdd.model import SvddEncoder, FlatEncoder, load_official_encoder, n_params
from glancesvdd.svdd.infer import (build_bank, build_index, combine_maps, embed_dense, embed_patches, infer_svdd,
                                   nn_brute, score_images, search_index)
from glancesvdd.svdd.config import SvddConfig, TABLE_S2
from glancesvdd.svdd.model import embedding_spread, is_collapsed, standardise
from glancesvdd.svdd.train import train_svdd

FIX = Path(__file__).parent/'fixtures'/'patchsvdd_official'
# Agreement with the official reference (nbs/22_svdd_infer explains both bounds). Patch scores, maps and image scores:
# relative 1e-4 with an absolute floor of 1e-6 (the fixture README's suggestion; the largest difference on an Intel Xeon
# is a quarter of that bound). Embeddings: 1e-4 absolute, not the README's 1e-5, because float32 embeddings are
# ill-conditioned and depend on the CPU's kernels: one K=32 embedding differs from the reference by 1.45e-5 on an AMD EPYC
# (torch 2.14.1), its float64 value lying between the two. A wrong layer, channel order or normalisation moves them by 0.3 to 2.
EMB_TOL = 1e-4
SCORE_TOL = dict(rtol=1e-4, atol=1e-6)


def to_x(a): return torch.from_numpy(a).permute(0, 3, 1, 2) / 255.  # uint8 NHWC -> [0, 1] NCHW


@pytest.fixture(scope='module')
def ref(): return dict(np.load(FIX/'reference.npz'))


@pytest.fixture(scope='module')
def wood(): return load_official_encoder(FIX/'wood_enchier.pkl')


@pytest.fixture(scope='module')
def official(ref, wood):
    "Our whole inference path on the fixture images with the released wood encoder"
    bank = build_bank(wood, to_x(ref['train_images']))
    out = score_images(wood, to_x(ref['test_images']), bank, device='cpu')
    test_emb = embed_dense(wood, standardise(to_x(ref['test_images']), bank['mean']))
    return dict(bank=bank, out=out, test_emb=test_emb)


# ---------------------------------------------------------------- parity with the official code (fixtures)
def test_official_checkpoints_load():
    for name in ('wood', 'bottle'):
        enc = load_official_encoder(FIX/f'{name}_enchier.pkl')
        assert isinstance(enc, SvddEncoder) and n_params(enc) == 401_984 and not enc.training
    a, b = (load_official_encoder(FIX/f'{n}_enchier.pkl').conv2.weight for n in ('wood', 'bottle'))
    assert not torch.equal(a, b)


def test_official_checkpoint_errors(tmp_path):
    with pytest.raises(GlanceSvddError, match='does not exist'): load_official_encoder(tmp_path/'none.pkl')
    torch.save({'conv2.weight': torch.zeros(64, 128, 1, 1)}, tmp_path/'partial.pkl')
    with pytest.raises(GlanceSvddError, match='missing'): load_official_encoder(tmp_path/'partial.pkl')
    torch.save([1, 2], tmp_path/'list.pkl')
    with pytest.raises(GlanceSvddError, match='not an official'): load_official_encoder(tmp_path/'list.pkl')


def test_parity_embeddings(ref, official):
    bank, emb = official['bank'], official['test_emb']
    np.testing.assert_allclose(bank['mean'].permute(1, 2, 0).numpy() * 255, ref['train_mean'], rtol=0, atol=1e-3)
    for K in (64, 32):
        np.testing.assert_allclose(bank[K]['features'].numpy(), ref[f'train_emb_k{K}'].reshape(-1, 64), rtol=0, atol=EMB_TOL)
        np.testing.assert_allclose(emb[K].numpy(), ref[f'test_emb_k{K}'], rtol=0, atol=EMB_TOL)


def test_parity_per_patch_path(ref, wood):
    "The official per-patch definition (crop, then encode) reproduces the reference embeddings too"
    x = standardise(to_x(ref['test_images'][1:]), torch.from_numpy(ref['train_mean']).permute(2, 0, 1) / 255)
    np.testing.assert_allclose(embed_patches(wood, x, 64, 16).numpy(), ref['test_emb_k64'][1:], rtol=0, atol=EMB_TOL)
    corner = x[..., :96, :96]  # the top-left 17 x 17 patches of the K=32 grid are enough to check the path
    np.testing.assert_allclose(embed_patches(wood.small, corner, 32, 4).numpy(), ref['test_emb_k32'][1:, :17, :17], rtol=0, atol=EMB_TOL)


def test_parity_scores_maps(ref, official):
    out = official['out']
    for ours, theirs in [('patch_scores_k64', 'test_patch_scores_k64'), ('patch_scores_k32', 'test_patch_scores_k32'),
                         ('maps_k64', 'maps_k64'), ('maps_k32', 'maps_k32'), ('maps', 'maps_mult')]:
        np.testing.assert_allclose(out[ours].numpy(), ref[theirs], **SCORE_TOL, err_msg=ours)
    maps_sum = combine_maps({64: out['maps_k64'], 32: out['maps_k32']}, 'sum')
    np.testing.assert_allclose(maps_sum.numpy(), ref['maps_sum'], **SCORE_TOL)
    np.testing.assert_allclose(out['image_scores'].numpy(), ref['image_scores'], **SCORE_TOL)
    assert out['image_scores'][0] > 1000 * out['image_scores'][1]   # the anomalous image stands out


def test_parity_nn_indices_are_neighbours(ref, official):
    "Indices may differ from the reference at near-ties (fixture README), but each must be a neighbour at its distance"
    bank, out, emb = official['bank'], official['out'], official['test_emb']
    for K in (64, 32):
        nn = bank[K]['features'][out[f'nn_index_k{K}'].flatten()]
        d = (emb[K].reshape(-1, 64).double() - nn.double()).norm(dim=1).float()
        np.testing.assert_allclose(d.numpy(), out[f'patch_scores_k{K}'].flatten().numpy(), rtol=1e-6, atol=1e-7)
    agree = (out['nn_index_k64'].numpy() == ref['test_nn_index_k64']).mean()
    assert agree > 0.9, agree


# ---------------------------------------------------------------- dense embedding = per-patch definition
@pytest.mark.parametrize('size,s64,s32', [(192, 16, 4), (160, 8, 6)])
def test_dense_equals_per_patch(size, s64, s32):
    torch.manual_seed(1)
    enc, x = SvddEncoder().eval(), torch.randn(1, 3, size, size) * 0.3
    e = embed_dense(enc, x, ((64, s64), (32, s32)))
    torch.testing.assert_close(e[64], embed_patches(enc, x, 64, s64), rtol=0, atol=2e-6)
    torch.testing.assert_close(e[32], embed_patches(enc.small, x, 32, s32), rtol=0, atol=2e-6)
    flat = FlatEncoder().eval()
    torch.testing.assert_close(embed_dense(flat, x, ((64, 16),))[64], embed_patches(flat, x, 64, 16), rtol=0, atol=2e-6)


# ---------------------------------------------------------------- exact nearest-neighbour search
def _exact(q, bank):
    return torch.cdist(q.double(), bank.double(), compute_mode='donot_use_mm_for_euclid_dist').min(1).values


def _banks():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(50, 64, generator=g).tanh()
    clustered = (centres[torch.randint(0, 50, (20000,), generator=g)] + 0.02 * torch.randn(20000, 64, generator=g)).clamp(-1, 1)
    clustered[:3000] = clustered[3000:6000]  # exact duplicates inside the bank
    return dict(clustered=clustered, uniform=torch.rand(8000, 64, generator=g) * 2 - 1), g


@pytest.mark.parametrize('name', ['clustered', 'uniform'])
def test_exact_search_equals_brute_force(name):
    banks, g = _banks()
    bank = banks[name]
    q = torch.cat([bank[:300], bank[:500] + 1e-4 * torch.randn(500, 64, generator=g), torch.rand(300, 64, generator=g) * 2 - 1])
    want = _exact(q, bank)
    ix = build_index(bank, block=128)
    for d, i in [search_index(ix, q), search_index(ix, q, q_chunk=333, max_pairs=500), nn_brute(q, bank, chunk=3000)]:
        torch.testing.assert_close(d, want, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close((q.double() - bank[i].double()).norm(dim=1), d, rtol=1e-9, atol=1e-9)
    assert search_index(ix, q[:300])[0].max() == 0  # exact duplicates: exactly 0, not float32 cancellation noise


def test_exact_search_on_official_features(official):
    "Real trained-encoder features with many near-ties (fixture README): exact search = float64 brute force"
    bank, emb = official['bank'], official['test_emb']
    q = emb[32].reshape(-1, 64)
    d, _ = search_index(bank[32]['index'], q)
    torch.testing.assert_close(d, _exact(q, bank[32]['features']), rtol=1e-9, atol=1e-12)


def test_approximate_search_is_an_option():
    banks, g = _banks()
    bank = banks['clustered']; q = bank[:2000] + 0.01 * torch.randn(2000, 64, generator=g)
    ix = build_index(bank, block=128)
    approx, exact = search_index(ix, q, exact=False)[0], search_index(ix, q)[0]
    # exact=False searches the query's nearest cell only, and that cell exactly: its float64 brute-force minimum
    cells = torch.repeat_interleave(torch.arange(len(ix['centres'])), ix['counts'])  # cell of each bank row (sorted by cell)
    dqc = torch.cdist(q.double(), ix['centres'], compute_mode='donot_use_mm_for_euclid_dist').float()
    near = dqc.masked_fill(ix['counts'] == 0, float('inf')).argmin(1)  # (n,) each query's nearest non-empty cell
    want = torch.empty(len(q), dtype=torch.float64)
    for c in near.unique(): want[near == c] = _exact(q[near == c], ix['bank'][cells == c])
    torch.testing.assert_close(approx, want, rtol=1e-9, atol=1e-9)
    assert 0 < (approx > exact + 1e-9).sum() < len(q) // 2  # an approximation: it misses some neighbours, not most
    assert SvddConfig().nn_search == 'exact'
    with pytest.raises(GlanceSvddError, match='approx'): SvddConfig(nn_search='ngt')


# ---------------------------------------------------------------- training: resume, collapse, smoke
@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_synthetic_mvtec(tmp_path_factory.mktemp('svdd')/'data', categories=('gravel',), n_train=10, n_test_good=8,
                                n_test_defect=3, image_size=128)


def small(data, **kw):
    return SvddConfig(category='gravel', data_root=str(data), image_size=128, device='cpu', **kw)


def test_resume_gives_identical_weights(data, tmp_path, monkeypatch):
    cfg = small(data, iters=6, batch_size=4, ckpt_every=2)
    full = train_svdd(cfg, tmp_path/'full', progress=False)
    real, calls = T.crop_pairs, []
    def interrupted(*a, **k):  # Ctrl-C in step 3 (two crops per step)
        calls.append(1)
        if len(calls) == 7: raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(T, 'crop_pairs', interrupted)
    with pytest.raises(KeyboardInterrupt): train_svdd(cfg, tmp_path/'cut', progress=False)
    monkeypatch.setattr(T, 'crop_pairs', real)
    assert latest_checkpoint(tmp_path/'cut'/'checkpoints').name == 'iter_00000002.pt'
    cut = train_svdd(cfg, tmp_path/'cut', progress=False)
    a, b = load_torch(full/'model.pt'), load_torch(cut/'model.pt')
    for part in ('encoder', 'cls_64', 'cls_32'):
        for k in a[part]: assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert load_json(full/'train.json')['last_losses'] == load_json(cut/'train.json')['last_losses']


def test_collapse_is_detected_and_reported(data, tmp_path):
    x = torch.rand(2, 3, 128, 128) - 0.5
    enc = SvddEncoder().eval()
    assert not is_collapsed(embedding_spread(enc, x, n=64))
    with torch.no_grad(): enc.small.conv8.weight.zero_()   # f_small outputs tanh(bias): constant at both scales
    s = embedding_spread(enc, x, n=64)
    assert s['spread_32'] == 0 and is_collapsed(s)
    # a run whose encoder is constant is marked in train.json, warned about, and refused by inference
    cfg = small(data, iters=1, batch_size=2, lr=1e-12)   # one step that changes nothing measurable (lr must be > 0)
    real = T.make_encoder
    def constant(*a, **k):
        e = real(*a, **k)
        with torch.no_grad(): e.small.conv8.weight.zero_()
        return e
    T.make_encoder = constant
    try:
        with pytest.warns(UserWarning, match='collapsed'): run = train_svdd(cfg, tmp_path/'run', progress=False)
    finally: T.make_encoder = real
    assert load_json(run/'train.json')['collapsed'] is True
    with pytest.raises(GlanceSvddError, match='collapsed'): infer_svdd(cfg, run, progress=False)
    infer_svdd(cfg, run, allow_collapsed=True, progress=False)
    s = load_scores(run)
    assert bool(s['collapsed']) and np.ptp(s['image_scores']) == 0   # what scoring it would have given: constant


def test_table_s2_flat_encoder_run(data, tmp_path):
    "Table S2's first row: the non-hierarchical encoder trains the K=64 terms only and is scored at K=64 only"
    cfg = replace(small(data, iters=2, batch_size=4), **TABLE_S2['flat_k64'])
    run = train_svdd(cfg, tmp_path/'flat', progress=False)
    assert set(load_torch(run/'model.pt')) == {'encoder', 'hierarchical', 'D', 'cls_64'}
    infer_svdd(cfg, run, progress=False)
    s = load_scores(run)
    assert 'maps_k64' in s and 'maps_k32' not in s and s['patch_scores_k64'].shape == (23, 5, 5)
    np.testing.assert_array_equal(s['maps'], s['maps_k64'])
    k32 = replace(small(data, iters=2, batch_size=4), **TABLE_S2['hier_k32'])
    infer_svdd(k32, train_svdd(k32, tmp_path/'k32', progress=False), progress=False)
    s = load_scores(tmp_path/'k32')
    np.testing.assert_array_equal(s['maps'], s['maps_k32'])


@pytest.mark.filterwarnings('ignore:Patch SVDD gravel')
def test_huge_lambda_collapses_in_the_training_log(data, tmp_path):
    "λ = 1e4 (issue #10's failure, exaggerated): the embeddings become constant within a few steps, and the log shows it"
    run = train_svdd(small(data, iters=12, batch_size=8, lr=1e-2, lambda_svdd=1e4), tmp_path/'run', progress=False)
    assert load_json(run/'train.json')['collapse_steps'] > 0


@pytest.mark.slow
def test_smoke_run_beats_random_encoder(data, tmp_path):
    """A short CPU run trains (interrupted and resumed), evaluates, and beats its own random initialisation.

    A 60-step run needs λ = 1 (the official argparse default) and lr = 1e-3 to move visibly: the quick gain comes from
    L_SVDD'; with λ = 1e-3 (the default, for 300 epochs) a run this short does not reliably beat the random encoder."""
    base = small(data, batch_size=16, lr=1e-3, lambda_svdd=1, ckpt_every=20)
    results = {}
    for name, iters in (('random', 1), ('trained', 60)):
        cfg = replace(base, iters=iters, lr=1e-12 if name == 'random' else base.lr)   # 'random': one step of ~1e-12, the initialisation
        if name == 'trained':  # stop once after the first checkpoint, then resume
            real, calls = T.crop_pairs, []
            def interrupted(*a, **k):
                calls.append(1)
                if len(calls) == 2 * 25: raise KeyboardInterrupt
                return real(*a, **k)
            T.crop_pairs = interrupted
            try: train_svdd(cfg, tmp_path/name, progress=False)
            except KeyboardInterrupt: pass
            finally: T.crop_pairs = real
            assert latest_checkpoint(tmp_path/name/'checkpoints').name == 'iter_00000020.pt'
        run = train_svdd(cfg, tmp_path/name, progress=False)
        infer_svdd(cfg, run, progress=False)
        results[name] = evaluate_run(run)
    r, t = results['random'], results['trained']
    assert load_json(tmp_path/'trained'/'train.json')['collapsed'] is False
    assert t['image_auroc'] > r['image_auroc'] + 0.1, (r, t)
    assert t['pixel_auroc'] > r['pixel_auroc'] + 0.1, (r, t)
    assert {'image_auroc_k64', 'pixel_auroc_k32', 'aupro', 'aupro_k32'} <= set(t)


def test_full_run_checkpoint_loads_weights_only():
    "The committed checkpoint of the full real-bottle run (written before files were read weights-only) loads with load_torch: numpy states and history included"
    ck = load_torch(Path(__file__).resolve().parents[1]/'benchmarks'/'results'/'svdd_bottle_full'/'resume.pt')['checkpoint']
    assert ck['iter'] == 28_000 and len(ck['history']['loss']) == 28_000 and ck['history']['iter'].dtype == np.int64
    assert ck['global_rng']['numpy'][1].dtype == np.uint32 and set(ck['state']) >= {'encoder', 'optimizer'}
