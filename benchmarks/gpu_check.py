"""The GPU check of issue 14: correctness on CUDA, throughput at the papers' settings, the speed options, and the hours
per category projected from the papers' schedules, in one command that ends within 8 minutes on one GPU.

    make gpu-check                                      # python3 benchmarks/gpu_check.py --out benchmarks/results
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gc    # tiny sizes on a CPU, under a minute

It prints each result as soon as it has it and rewrites <out>/<name>.json and .md after every part (name: gpu_check,
--name to change), so a run cut off at its limit still says what it found. Each part stops at its own time budget
(--budget-scale stretches them all) and the whole run at --deadline seconds. It runs with the GPU machine's own Python:
torch, torchvision, numpy, scipy, scikit-learn, scikit-image, Pillow; no papermill, nbdev or ipywidgets.

Parts:
- correctness on CUDA (the same functions are `@pytest.mark.gpu` tests in tests/test_gpu_check.py): dense Patch SVDD
  embedding = CPU within 1e-5 (TF32 off); parity with the official fixtures; CUDA exact search = CPU pruned search;
  GLANCE hole leakage and box path = plain path; resumed = uninterrupted training (deterministic algorithms); a smoke
  training and evaluation of each method on synthetic data;
- throughput at the papers' settings: Patch SVDD training steps/s at the official batch and inference images/s with a
  bottle-sized bank (exact search); GLANCE Stage A (ImageNet-size and fine-tune) and Stage B it/s, inference ms/image;
  peak GPU memory; hours per category projected from the schedules;
- speed options, each against the fp32 default for speed and for the loss after N steps: channels_last, cudnn.benchmark,
  bf16 autocast (the configs' `precision`), pinned memory and DataLoader workers (GLANCE), torch.compile;
- a profile of one training step of each method (data, kernels, the rest: Python and launches);
- `batch --executor local`: the device list it would use (one job per visible GPU).
"""
from __future__ import annotations
import argparse, contextlib, functools, json, math, os, platform, signal, subprocess, sys, tempfile, time, traceback
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))   # the GPU machine runs the checkout, not an installed copy
os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')   # deterministic cuBLAS (resume check): before CUDA starts
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')           # see benchmarks/bench_svdd.py

import numpy as np
import torch

from glancesvdd.core import get_device, save_json, seed_everything
from glancesvdd.data import make_synthetic_mvtec, synthetic_sample, SYNTHETIC_DEFECTS

FIX = ROOT/'tests'/'fixtures'/'patchsvdd_official'
TOL_EMBED, TOL_PARITY, TOL_SEARCH = 1e-5, 1e-4, 1e-6   # issue 14; parity: tests/test_svdd.py's TOL
LOSS_TOL = 0.02    # a speed option is "same results" when the mean loss of its last steps is within 2% of fp32's
SCHEDULE = dict(svdd_steps=299 * 327, svdd_test_images=83,            # bottle: 299 epochs x ceil(100 * 209 / 64); 83 test images
                glance_imagenet=50_000, glance_finetune=50_000, glance_global=200_000, glance_test_images=83)
TARGETS = dict(svdd_step_ms=8, svdd_infer_ms=5, svdd_bank_s=2, glance_stage_b_ms=30, glance_infer_ms=20)   # issues 14 and 22, one H200


# ------------------------------------------------------------------------------------------------ plumbing
class PartTimeout(BaseException):
    "A part ran past its budget (a BaseException, so that no library `except Exception` swallows it)"


PARTIAL = {}   # what a part has found so far: kept in the results when it runs past its budget or fails


@contextlib.contextmanager
def budget(seconds:float):
    "Raise PartTimeout in the main thread after `seconds`"
    def alarm(signum, frame): raise PartTimeout(f'stopped at its budget of {seconds:.0f} s')
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try: yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0); signal.signal(signal.SIGALRM, old)


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def tf32_off():
    "The library's scope for full float32 (no TF32 convolutions or matrix products), as its parity claims use it"
    from glancesvdd.core import full_float32
    return full_float32()


@contextlib.contextmanager
def torch_flags(cudnn_benchmark:bool|None=None, deterministic:bool|None=None):
    "Set torch's global cudnn.benchmark / deterministic switches inside the block"
    old = torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if cudnn_benchmark is not None: torch.backends.cudnn.benchmark = cudnn_benchmark
    if deterministic is not None: torch.use_deterministic_algorithms(deterministic, warn_only=True)   # as core.seed_everything
    try: yield
    finally: torch.backends.cudnn.benchmark = old[0]; torch.use_deterministic_algorithms(old[1], warn_only=old[2])


def timed(f, dev, n:int, warmup:int=1)->float:
    "Seconds per call of `f` over `n` calls after `warmup` calls"
    for _ in range(warmup): f()
    sync(dev); t = time.perf_counter()
    for _ in range(n): f()
    sync(dev)
    return (time.perf_counter() - t) / max(n, 1)


def peak_gb(dev)->float|None:
    return torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == 'cuda' else None


def reset_peak(dev):
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(dev)


@functools.lru_cache(maxsize=8)
def images(n:int, size:int, split:str='train', category:str='logo', seed:int=0)->torch.Tensor:
    "n synthetic images (n, 3, S, S) in [0, 1]; test images alternate good and defective (as benchmarks/bench_svdd.py)"
    kinds = ['good'] if split == 'train' else ['good', *SYNTHETIC_DEFECTS]
    a = [synthetic_sample(category, kinds[i % len(kinds)], i, split, seed, size)['image'] for i in range(n)]
    return torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float() / 255


def many(n:int, size:int)->torch.Tensor:
    "n training images made of at most 16 distinct ones (speed does not depend on the content; making 209 takes 10-20 s)"
    x = images(min(n, 16), size)
    return x[torch.arange(n) % len(x)]


# ------------------------------------------------------------------------------------------------ correctness
def check_svdd_embedding(dev, quick:bool=False)->dict:
    "Dense Patch SVDD embedding on `dev` equals the official per-patch definition computed on the CPU, within 1e-5, TF32 off"
    from glancesvdd.svdd.model import load_official_encoder
    from glancesvdd.svdd.infer import embed_dense, embed_patches
    from glancesvdd.svdd.model import mean_image, standardise
    x = images(1 if quick else 2, 128 if quick else 256)
    x = standardise(x, mean_image(x))
    enc = load_official_encoder(FIX/'bottle_enchier.pkl')
    with torch.no_grad(): ref = {64: embed_patches(enc, x, 64, 16), 32: embed_patches(enc.small, x, 32, 4)}   # crop, encode: another path
    with tf32_off(): out = embed_dense(enc.to(dev), x)
    diff = max(float((out[K] - ref[K]).abs().max()) for K in ref)
    return dict(ok=diff <= TOL_EMBED, max_abs_diff=diff, tol=TOL_EMBED, reference='per-patch on the CPU')


def check_svdd_parity(dev, quick:bool=False)->dict:
    "Our inference on `dev` reproduces the official code's embeddings, maps and image scores (tests/fixtures)"
    from glancesvdd.svdd.model import load_official_encoder
    from glancesvdd.svdd.infer import build_bank, score_images
    ref = dict(np.load(FIX/'reference.npz'))
    to_x = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2) / 255.
    enc = load_official_encoder(FIX/'wood_enchier.pkl').to(dev)
    with tf32_off():
        bank = build_bank(enc, to_x(ref['train_images']))
        out = score_images(enc, to_x(ref['test_images']), bank, device=dev)
    pairs = [('patch_scores_k64', 'test_patch_scores_k64'), ('patch_scores_k32', 'test_patch_scores_k32'), ('maps', 'maps_mult'),
             ('image_scores', 'image_scores')]
    # tests/test_svdd.py's bounds: embeddings within 1e-4; scores, maps and image scores within a relative 1e-4 (absolute floor 1e-6)
    emb = {K: float(np.abs(bank[K]['features'].numpy() - ref[f'train_emb_k{K}'].reshape(-1, 64)).max()) for K in (64, 32)}
    ratio = {a: float((np.abs(out[a].cpu().numpy() - ref[b]) / (1e-6 + 1e-4 * np.abs(ref[b]))).max()) for a, b in pairs}
    return dict(ok=max(emb.values()) <= TOL_PARITY and max(ratio.values()) <= 1, max_abs_diff_embeddings=max(emb.values()),
                tol_embeddings=TOL_PARITY, worst_score_error_over_bound=max(ratio.values()), diffs=dict(emb, **ratio))


def check_svdd_search(dev, quick:bool=False)->dict:
    "Exact search on `dev` (the fused Triton scan on CUDA) = the CPU pruned index: same neighbours up to ties, distances within 1e-6"
    from glancesvdd.svdd.model import load_official_encoder
    from glancesvdd.svdd.infer import build_index, search_index, nearest_normal, embed_dense
    from glancesvdd.svdd.model import mean_image, standardise
    enc = load_official_encoder(FIX/'bottle_enchier.pkl')
    tr, te = images(3 if quick else 20, 128 if quick else 256), images(1 if quick else 4, 128 if quick else 256, 'test')
    m = mean_image(tr)
    bank = embed_dense(enc, standardise(tr, m))[32].reshape(-1, 64)
    q = embed_dense(enc, standardise(te, m))[32].reshape(-1, 64)
    d_cpu, i_cpu = search_index(build_index(bank), q)
    bank_k, stats = dict(features=bank), {}
    d_dev, i_dev = nearest_normal(q, bank_k, dev, stats=stats)
    same = i_cpu == i_dev
    tie = (q[~same].double() - bank[i_dev[~same]].double()).norm(dim=1) - d_cpu[~same]   # a different index must be a tie
    diff = float((d_dev - d_cpu).abs().max())
    ties_ok = bool(tie.numel() == 0 or tie.abs().max() <= TOL_SEARCH)
    return dict(ok=diff <= TOL_SEARCH and ties_ok, max_abs_diff=diff, tol=TOL_SEARCH, queries=len(q), bank=len(bank),
                same_index=float(same.double().mean()), differing_indices_are_ties=ties_ok, rechecked=stats.get('rechecked'),
                how='nn_gpu (Triton)' if 'rechecked' in stats else 'search_index (CPU)')


def check_release_bottle(dev, quick:bool=False, data=None)->dict:
    "The released bottle encoder on real MVTec AD bottle, through the library on `dev`: image / pixel AUROC 0.9730 / 0.9784 (official)"
    if data is None: return dict(ok=True, skipped='no --data folder with real MVTec AD bottle')
    from glancesvdd.data import load_split
    from glancesvdd.metrics import image_auroc, pixel_auroc
    from glancesvdd.svdd.model import load_official_encoder
    from glancesvdd.svdd.infer import build_bank, score_images
    tr, te = (load_split(data, 'bottle', s, progress=False) for s in ('train', 'test'))
    enc = load_official_encoder(FIX/'bottle_enchier.pkl').to(dev)
    bank = build_bank(enc, tr['images'], index=dev.type != 'cuda')
    bank['mean'] = bank['mean'].to(dev)
    x = te['images'].to(dev)
    out = [score_images(enc, x[i:i + 16], bank, device=dev) for i in range(0, len(x), 16)]
    s, maps = torch.cat([o['image_scores'] for o in out]), torch.cat([o['maps'] for o in out])
    img, pix = image_auroc(s, te['labels']), pixel_auroc(maps, te['masks'])
    return dict(ok=abs(img - 0.9730) < 5e-5 and abs(pix - 0.9784) < 5e-5, image_auroc=round(img, 4), pixel_auroc=round(pix, 4),
                official='0.9730 / 0.9784')


def check_glance_leakage(dev, quick:bool=False)->dict:
    "GLANCE on `dev`: noise inside the hole leaves Z_g unchanged; features match the CPU's"
    from glancesvdd.glance.global_net import GlobalNet, hole_masks
    from glancesvdd.glance.local_net import LocalNet
    from glancesvdd.patches import glance_corners
    torch.manual_seed(0)
    G, L = GlobalNet().eval(), LocalNet().eval()
    n = 2 if quick else 8
    x, p = torch.rand(n, 3, 256, 256), torch.rand(n, 3, 33, 33)
    M = hole_masks(glance_corners()[np.linspace(0, 399, n).astype(int)])
    with torch.no_grad(), tf32_off():
        ref = G(x, M), L(p)
        G, L, xd, Md = G.to(dev), L.to(dev), x.to(dev), M.to(dev)
        z = G(xd, Md)
        noisy = G(xd * Md + torch.rand_like(xd) * (1 - Md), Md)
        zl = L(p.to(dev))
    leak = float((noisy - z).abs().max())
    vs_cpu = max(float((z.cpu() - ref[0]).abs().max()), float((zl.cpu() - ref[1]).abs().max()))
    return dict(ok=leak <= 1e-6 and vs_cpu <= 1e-4, hole_leakage=leak, max_abs_diff_vs_cpu=vs_cpu)


def check_glance_fast_path(dev, quick:bool=False)->dict:
    "GLANCE on `dev`: the box path (recomputes only what a hole changes) = 400 plain masked passes"
    from glancesvdd.glance.global_net import GlobalNet
    from glancesvdd.glance.infer import box_global_features, grid_global_features
    from glancesvdd.patches import glance_corners
    torch.manual_seed(0)
    G = GlobalNet().eval().to(dev)
    corners = glance_corners()[::8] if quick else glance_corners()
    x = torch.rand(3, 256, 256, device=dev)
    with tf32_off():
        fast, plain = box_global_features(G, x, corners), grid_global_features(G, x, corners, chunk=100)
    diff = float((fast - plain).abs().max())
    return dict(ok=diff <= 1e-4, max_abs_diff=diff, tol=1e-4, holes=len(corners))


class _Stop(Exception): pass


def _interrupt_after(module, name:str, n:int):
    "Make `module.name` raise _Stop from its (n+1)-th call on; returns a function that undoes it"
    real, calls = getattr(module, name), []
    def f(*a, **k):
        calls.append(1)
        if len(calls) > n: raise _Stop
        return real(*a, **k)
    setattr(module, name, f)
    return lambda: setattr(module, name, real)


def check_resume(dev, quick:bool=False, root=None)->dict:
    "A run interrupted and resumed on `dev` ends with the same weights as an uninterrupted one (deterministic algorithms)"
    import glancesvdd.svdd.train as T, glancesvdd.glance.train as GT
    from glancesvdd.core import load_torch
    from glancesvdd.glance.config import GlanceConfig, smoke_config
    from glancesvdd.glance.train import train_glance
    root = Path(root or tempfile.mkdtemp(prefix='gpu_check_'))
    data = make_synthetic_mvtec(root/'data', categories=('gravel',), n_train=4, n_test_good=1, n_test_defect=1, defects=('stain',))
    out = {}
    with torch_flags(cudnn_benchmark=False, deterministic=True):
        cfg = T.SvddConfig(category='gravel', data_root=str(data), image_size=128, device=str(dev), iters=6, batch_size=2 if quick else 8,
                           ckpt_every=2)
        full = T.train_svdd(cfg, root/'svdd_full', progress=False)
        undo = _interrupt_after(T, 'crop_pairs', 6)   # two crops per step: stops in step 4, after the checkpoint of step 2
        try: T.train_svdd(cfg, root/'svdd_cut', progress=False)
        except _Stop: pass
        finally: undo()
        cut = T.train_svdd(cfg, root/'svdd_cut', progress=False)
        a, b = load_torch(full/'model.pt'), load_torch(cut/'model.pt')
        out['svdd_equal'] = all(torch.equal(a[p][k], b[p][k]) for p in ('encoder', 'cls_64', 'cls_32') for k in a[p])
        g = smoke_config(GlanceConfig(category='gravel', data_root=str(data), imagenet_dir='skip', teacher_weights='untrained',
                                      device=str(dev), workers=0), iters=8, batch=2 if quick else 8, grid=4)   # the Global-Net needs 256 px (Tab. 2); batches made in this process, where the interruption is planted
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            full = train_glance(g, root/'glance_full', progress=False)
            undo = _interrupt_after(GT, 'stain_layers', 5)   # in Stage B, after its checkpoint of iteration 2
            try: train_glance(g, root/'glance_cut', progress=False)
            except _Stop: pass
            finally: undo()
            cut = train_glance(g, root/'glance_cut', progress=False)
        a, b = load_torch(full/'glance.pt'), load_torch(cut/'glance.pt')
        out['glance_equal'] = all(torch.equal(a[p][k], b[p][k]) for p in a for k in a[p])
    return dict(ok=out['svdd_equal'] and out['glance_equal'], **out)


def check_smoke(dev, quick:bool=False, root=None)->dict:
    "A smoke training and evaluation of each method on synthetic data, on `dev`"
    import warnings
    from glancesvdd.metrics import evaluate_run
    from glancesvdd.svdd.config import SvddConfig, smoke_config as svdd_smoke
    from glancesvdd.svdd.train import train_svdd
    from glancesvdd.svdd.infer import infer_svdd
    from glancesvdd.glance.config import GlanceConfig, smoke_config as glance_smoke
    from glancesvdd.glance.train import train_glance
    from glancesvdd.glance.infer import infer_glance
    root = Path(root or tempfile.mkdtemp(prefix='gpu_check_'))
    size = 128 if quick else 256   # Patch SVDD's image size; GLANCE's Global-Net needs 256 (Tab. 2)
    data = make_synthetic_mvtec(root/'data', categories=('brick', 'logo'), n_train=4 if quick else 8, n_test_good=2, n_test_defect=1,
                                defects=('scratch', 'stain') if quick else SYNTHETIC_DEFECTS)
    res = {}
    cfg = svdd_smoke(SvddConfig(category='logo', data_root=str(data), image_size=size, device=str(dev)), iters=2 if quick else 40,
                     batch=4 if quick else 8)
    run = train_svdd(cfg, root/'svdd', progress=False); infer_svdd(cfg, run, progress=False)
    res['svdd'] = evaluate_run(run)
    g = glance_smoke(GlanceConfig(category='logo', data_root=str(data), imagenet_dir=str(data/'brick'/'train'),
                                  teacher_weights='untrained', device=str(dev)), iters=4 if quick else 80, batch=2 if quick else 16,
                     grid=4 if quick else 20)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        run = train_glance(g, root/'glance', progress=False)
    infer_glance(g, run, progress=False)
    res['glance'] = evaluate_run(run)
    keys = ('image_auroc', 'pixel_auroc')
    ok = all(np.isfinite(res[m][k]) for m in res for k in keys)
    return dict(ok=ok, **{f'{m}_{k}': round(float(res[m][k]), 3) for m in res for k in keys})


CHECKS = dict(svdd_embedding=check_svdd_embedding, svdd_parity=check_svdd_parity, svdd_search=check_svdd_search,
              glance_leakage=check_glance_leakage, glance_fast_path=check_glance_fast_path, resume=check_resume, smoke=check_smoke)


# ------------------------------------------------------------------------------------------------ throughput
def svdd_trainer(dev, n_img:int, size:int, batch:int, precision='fp32', seed=0, x=None):
    from glancesvdd.svdd.config import SvddConfig
    from glancesvdd.svdd.train import make_trainer
    from glancesvdd.svdd.model import mean_image, standardise
    x = many(n_img, size) if x is None else x
    cfg = SvddConfig(device=str(dev), image_size=size, batch_size=batch, precision=precision, seed=seed)
    return make_trainer(cfg, standardise(x, mean_image(x)).to(dev))


def kernel_seconds(step, dev, n:int=3, start:int=0)->float|None:
    "GPU kernel time of one call of step(it), from the profiler over n calls"
    if dev.type != 'cuda': return None
    from torch.profiler import profile, ProfilerActivity
    sync(dev)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for it in range(start, start + n): step(it)
        sync(dev)
    return sum(getattr(e, 'self_device_time_total', 0) for e in prof.key_averages()) / 1e6 / n


def bench_svdd_train(dev, quick:bool, steps:int, x=None)->dict:
    "The training step at the official batch in each precision (and tf32 with cudnn.benchmark): s/step and GPU-kernel s/step"
    size, nimg, batch = (128, 4, 4) if quick else (256, 209, 64)
    out = {}
    for name, prec, bench in (('fp32', 'fp32', False), ('tf32', 'tf32', False), ('bf16', 'bf16', False), ('tf32_cudnn_benchmark', 'tf32', True)):
        reset_peak(dev)
        with torch_flags(cudnn_benchmark=bench):
            tr = svdd_trainer(dev, nimg, size, batch, prec, x=x)
            it = iter(range(10**9))
            s = timed(lambda: tr['step'](next(it)), dev, steps, warmup=1 if quick else 10)
            k = kernel_seconds(tr['step'], dev, 1 if quick else 5, start=10**6)
        out[name] = dict(s_per_step=s, gpu_kernel_s_per_step=k, peak_gpu_gb=peak_gb(dev))
        print(f"      svdd step {name:<22} {1e3 * s:7.2f} ms" + (f", kernels {1e3 * k:.2f} ms" if k else ''), flush=True)
    from glancesvdd.svdd.config import SvddConfig
    d = out[SvddConfig().precision]
    return dict(batch=batch, default_precision=SvddConfig().precision, s_per_step=d['s_per_step'], gpu_kernel_s_per_step=d['gpu_kernel_s_per_step'],
                steps_per_s=1 / d['s_per_step'], peak_gpu_gb=d['peak_gpu_gb'], precisions=out)


def bench_svdd_infer(dev, quick:bool, n_test:int, data=None)->dict:
    "Inference with a bottle-sized bank (209 images: 679,041 K=32 features; real bottle with --data), exact search, images on the device"
    from glancesvdd.svdd.model import load_official_encoder
    from glancesvdd.svdd.infer import build_bank, score_images
    reset_peak(dev)
    size = 128 if quick else 256
    enc = load_official_encoder(FIX/'bottle_enchier.pkl').to(dev)
    if data is not None and not quick:
        from glancesvdd.data import load_split
        train, test = (load_split(data, 'bottle', s, progress=False)['images'] for s in ('train', 'test'))
        test = test[:n_test]
    else: train, test = many(3 if quick else 209, size), images(n_test, size, 'test')
    def build():
        bank = build_bank(enc, train, index=dev.type != 'cuda')
        bank['mean'] = bank['mean'].to(dev)
        if dev.type == 'cuda':
            from glancesvdd.svdd.gpu_search import gpu_bank
            for K in (64, 32): bank[K]['gpu'] = gpu_bank(bank[K]['features'].to(dev))
        return bank
    build(); sync(dev)                                   # warm-up: kernels and cuDNN plans
    t = time.perf_counter(); bank = build(); sync(dev); bank_s = time.perf_counter() - t
    x = test.to(dev)
    from glancesvdd.svdd.infer import nearest_normal
    out = {}
    for b in (1, 16):
        b = min(b, n_test)
        s = timed(lambda: score_images(enc, x[:b], bank, device=dev), dev, max(1, n_test // b), warmup=1) / b
        out[f'ms_per_image_batch{b}'] = 1e3 * s
    # where an image's time goes, at batch 16: the dense embedding, then each scale's search (on CUDA split into the fused
    # scan and the float64 recheck, with the share of queries the rounding bound sends to it); the rest is the maps
    from glancesvdd.svdd.infer import embed_dense
    from glancesvdd.svdd.model import standardise
    b = min(16, n_test)
    xs = standardise(x[:b], bank['mean'])
    emb = lambda: embed_dense(enc, xs, tuple(bank['scales'].items()), on_device=True)
    out['embed_ms_per_image'] = 1e3 * timed(emb, dev, 3) / b
    e = emb()
    for K in e:
        q = e[K].reshape(-1, e[K].shape[-1])
        nearest_normal(q, bank[K], dev)                                      # warm-up: the kernels of this query count
        st = {}; sync(dev); t = time.perf_counter()
        nearest_normal(q, bank[K], dev, stats=st if dev.type == 'cuda' else None)
        sync(dev); out[f'k{K}_search_ms_per_image'] = 1e3 * (time.perf_counter() - t) / b
        if st: out.update({f'k{K}_queries': st['queries'], f'k{K}_rechecked': st['rechecked'],
                           **{f'k{K}_{k}_ms_per_image': 1e3 * v / b for k, v in st['seconds'].items()}})
    return dict(data='real bottle' if data is not None and not quick else 'synthetic', bank_images=len(train), bank_k32=len(bank[32]['features']),
                bank_build_s=bank_s, test_images=n_test, ms_per_image=min(out[k] for k in out if k.startswith('ms_per_image_batch')),
                images_per_s=1e3 / min(out[k] for k in out if k.startswith('ms_per_image_batch')),
                peak_gpu_gb=peak_gb(dev), **out)


def glance_nets(dev):
    from glancesvdd.glance.local_net import LocalNet
    from glancesvdd.glance.global_net import GlobalNet
    from glancesvdd.glance.dad_head import DADHead
    torch.manual_seed(0)
    return tuple(m.to(dev) for m in (LocalNet(), GlobalNet(), DADHead()))


def glance_stage_b(dev, batch:int, n_img:int=16, size:int=256, precision='fp32', workers=None, pin=None, fixed=False):
    "A Stage-B step function at the paper's setting (the training images on the device, the loader's defaults for `dev`)"
    from glancesvdd.glance.config import GlanceConfig, _stains
    from glancesvdd.glance.train import StainedPairs, Prefetcher, global_step, loader_settings, _adam
    cfg = GlanceConfig(image_size=size)
    L, G, C = glance_nets(dev)
    L.eval().requires_grad_(False)
    opt_g, opt_c = _adam([G], cfg.lr_global, cfg.betas), _adam([C], cfg.lr_head, cfg.betas)
    pairs = StainedPairs(images(n_img, size).to(dev), batch, 0, cfg.patch_size, **_stains(cfg))
    if fixed: one = pairs[0]; batches = lambda it: one
    else: batches = Prefetcher(pairs, 10**9, *loader_settings(workers, pin, dev), dev)
    return global_step(L, G, C, opt_g, opt_c, batches, cfg.lambda_t, dev, cfg.dad_reduction, precision)


def bench_glance_train(dev, quick:bool, iters:int)->dict:
    "Stage B at batch 64 with the loader's defaults, in each precision, with cudnn.benchmark, and without batch preparation; Stage A"
    from glancesvdd.glance.config import GlanceConfig, _stains
    from glancesvdd.glance.train import ImagePatches, Prefetcher, StainedPairs, load_teacher, local_step, loader_settings, _adam
    import warnings
    cfg, out = GlanceConfig(), {}
    size, bb, n_img = 256, (2 if quick else cfg.batch_size), (4 if quick else 16)
    variants = dict(fp32=dict(), tf32=dict(precision='tf32'), bf16=dict(precision='bf16'), tf32_cudnn_benchmark=dict(precision='tf32'),
                    network_only_fp32=dict(fixed=True), network_only_tf32=dict(precision='tf32', fixed=True))
    stage_b = {}
    for name, kw in variants.items():
        reset_peak(dev)
        with torch_flags(cudnn_benchmark='benchmark' in name):
            step = glance_stage_b(dev, bb, n_img, size, **kw)
            it = iter(range(10**9))
            s = timed(lambda: step(next(it)), dev, iters, warmup=1 if quick else 3)
            k = kernel_seconds(step, dev, 1 if quick else 3, start=10**6)
        stage_b[name] = dict(s_per_it=s, gpu_kernel_s_per_it=k, peak_gpu_gb=peak_gb(dev))
        print(f"      glance stage B {name:<22} {1e3 * s:7.2f} ms" + (f", kernels {1e3 * k:.2f} ms" if k else ''), flush=True)
        del step
    out['stage_b'] = stage_b
    out['stage_b_it_per_s'] = 1 / stage_b[cfg.precision]['s_per_it']
    out['workers'], out['pin_memory'] = loader_settings(None, None, dev)
    L, _, _ = glance_nets(dev)
    D = torch.nn.Linear(128, 512).to(dev)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        teacher = load_teacher('untrained', 64 if quick else cfg.teacher_size).to(dev)   # speed only: weights do not matter
    opt = _adam([L, D], cfg.lr_local, cfg.betas)
    x = images(n_img, size).to(dev)
    for name, b in (('stage_a_imagenet', 4 if quick else cfg.batch_imagenet), ('stage_a_finetune', 4 if quick else cfg.batch_finetune)):
        reset_peak(dev)
        step = local_step(L, D, opt, teacher, Prefetcher(ImagePatches(x, b, 0, cfg.patch_size), 10**9, 0, False, dev), cfg.lambda_k, cfg.lambda_c, dev)
        it = iter(range(10**9))
        out[f'{name}_it_per_s'] = 1 / timed(lambda: step(next(it)), dev, iters, warmup=1 if quick else 2)
        out[f'{name}_peak_gpu_gb'] = peak_gb(dev)
    # the ImageNet stage reads and decodes `batch_imagenet` image files per iteration (FolderPatches): one process's time for that
    from glancesvdd.glance.train import FolderPatches
    from PIL import Image
    d = Path(tempfile.mkdtemp(prefix='gpu_check_jpeg_'))
    for i in range(8 if quick else 64):   # ImageNet's typical 500x375 JPEGs (noise: decodes slower than photographs)
        Image.fromarray((np.random.default_rng(i).random((375, 500, 3)) * 255).astype(np.uint8)).save(d/f'{i}.JPEG', quality=90)
    folder, it = FolderPatches(d, 4 if quick else cfg.batch_imagenet, 0), iter(range(10**9))
    out['stage_a_imagenet_batch_prep_s'] = timed(lambda: folder.plan(next(it)), torch.device('cpu'), 2 if quick else 5, warmup=0)
    pairs = StainedPairs(images(n_img, size), bb, 0, cfg.patch_size, **_stains(cfg))
    out['stage_b_batch_plan_s'] = timed(lambda: pairs.plan(next(it)), torch.device('cpu'), 2 if quick else 5, warmup=0)
    import shutil; shutil.rmtree(d, ignore_errors=True)
    out['batches'] = dict(stage_b=bb, imagenet=cfg.batch_imagenet, finetune=cfg.batch_finetune, teacher_size=cfg.teacher_size)
    return out


@torch.no_grad()
def bench_glance_infer(dev, quick:bool, n:int)->dict:
    from glancesvdd.glance.infer import score_image, fuse_idw
    from glancesvdd.patches import glance_corners, patch_centres
    reset_peak(dev)
    L, G, C = (m.eval() for m in glance_nets(dev))
    corners = glance_corners()[::8] if quick else glance_corners()
    centres = patch_centres(corners, 33)
    xs = torch.rand(n, 3, 256, 256, device=dev)
    it = iter(range(10**9))
    def one(fast, chunk=100):
        s = score_image(L, G, C, xs[next(it) % n], corners, 33, 0.8, fast, chunk)['s']
        return fuse_idw(s[None], centres, (256, 256), 5.0)
    out = dict(ms_per_image_box=1e3 * timed(lambda: one(True), dev, n),
               ms_per_image_plain_400=1e3 * timed(lambda: one(False, 400), dev, max(1, n // 2)))   # all 400 holes in one batch
    out['ms_per_image'] = min(out.values())
    return dict(out, peak_gpu_gb=peak_gb(dev), holes=len(corners))


# ------------------------------------------------------------------------------------------------ the real loops
def _data(root:Path, quick:bool, data=None, size=None):
    "(data root, category, image size): real bottle when given (not in quick mode), else a small synthetic category"
    if data is not None and not quick: return str(data), 'bottle', 256
    d = make_synthetic_mvtec(root/'data', categories=('logo',), n_train=4 if quick else 16, n_test_good=2, n_test_defect=2,
                             defects=('scratch', 'stain'), image_size=size or 256)
    return str(d), 'logo', size or 256


def loop_svdd(dev, quick:bool, root:Path, data=None)->dict:
    "`train_svdd` then `infer_svdd` end to end (checkpoints every 100 steps, logging, bank, scores): seconds per step of the real loop"
    from glancesvdd.core import load_json
    from glancesvdd.metrics import evaluate_run
    from glancesvdd.svdd.config import SvddConfig
    from glancesvdd.svdd.train import train_svdd
    from glancesvdd.svdd.infer import infer_svdd
    droot, cat, size = _data(root, quick, data, 128 if quick else None)
    iters = 4 if quick else 300
    cfg = SvddConfig(category=cat, data_root=droot, image_size=size, device=str(dev), iters=iters, ckpt_every=2 if quick else 100,
                     batch_size=4 if quick else 64)
    os.environ['GLANCESVDD_PROGRESS'] = 'log'
    run = train_svdd(cfg, root/'loop_svdd', progress=True)
    rec = load_json(run/'train.json')
    t = time.perf_counter(); infer_svdd(cfg, run, progress=False); infer_s = time.perf_counter() - t
    t = time.perf_counter(); infer_svdd(cfg, run, progress=False); again_s = time.perf_counter() - t   # bank.pt kept, kernels compiled
    m = evaluate_run(run)
    return dict(data=cat, iters=iters, s_per_step=rec['seconds'] / iters, infer_s=infer_s, infer_again_s=again_s,
                checkpoints=len(list((run/'checkpoints').glob('iter_*.pt'))),
                image_auroc=round(m['image_auroc'], 3), pixel_auroc=round(m['pixel_auroc'], 3))


def loop_glance(dev, quick:bool, root:Path, data=None)->dict:
    "`train_glance` then `infer_glance` end to end (Stage A fine-tune, Stage B with the loader's defaults, checkpoints, scores)"
    import warnings
    from glancesvdd.core import load_json
    from glancesvdd.metrics import evaluate_run
    from glancesvdd.glance.config import GlanceConfig, smoke_config
    from glancesvdd.glance.train import train_glance
    from glancesvdd.glance.infer import infer_glance
    droot, cat, _ = _data(root, quick, data)
    iters = 4 if quick else 300
    cfg = GlanceConfig(category=cat, data_root=droot, imagenet_dir='skip', teacher_weights='untrained', device=str(dev), iters=iters,
                       iters_finetune=max(iters // 3, 1), ckpt_every=max(iters // 3, 1))
    if quick: cfg = smoke_config(cfg, iters=iters, batch=2, grid=4)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        run = train_glance(cfg, root/'loop_glance', progress=True)
    rec = load_json(run/'train.json')
    t = time.perf_counter(); infer_glance(cfg, run, progress=False); infer_s = time.perf_counter() - t
    m = evaluate_run(run)
    return dict(data=cat, iters=iters, stage_b_s_per_it=rec['global_seconds'] / iters, finetune_s_per_it=rec['finetune_seconds'] / cfg.iters_finetune,
                infer_s=infer_s, image_auroc=round(m['image_auroc'], 3), pixel_auroc=round(m['pixel_auroc'], 3))


def precision_svdd(dev, quick:bool, root:Path, data=None, steps:int=1500)->dict:
    "Patch SVDD trained `steps` steps from the same seed in each precision, evaluated in IEEE float32: loss, AUROCs, speed"
    from glancesvdd.core import load_json, PRECISIONS
    from glancesvdd.metrics import evaluate_run
    from glancesvdd.svdd.config import SvddConfig
    from glancesvdd.svdd.train import train_svdd
    from glancesvdd.svdd.infer import infer_svdd
    droot, cat, size = _data(root, quick, data, 128 if quick else None)
    steps = 3 if quick else steps
    out = PARTIAL.setdefault('precisions', {})          # kept if the part runs past its budget
    for prec in PRECISIONS:
        cfg = SvddConfig(category=cat, data_root=droot, image_size=size, device=str(dev), iters=steps, ckpt_every=steps,
                         batch_size=4 if quick else 64, precision=prec)
        run = train_svdd(cfg, root/f'precision_{prec}', progress=False)
        infer_svdd(cfg, run, progress=False)
        rec, m = load_json(run/'train.json'), evaluate_run(run)
        out[prec] = dict(loss=rec['last_losses']['loss'], s_per_step=rec['seconds'] / steps, image_auroc=round(m['image_auroc'], 4),
                         pixel_auroc=round(m['pixel_auroc'], 4))
        print(f"      {prec}: loss {out[prec]['loss']:.4f}, {1e3 * out[prec]['s_per_step']:.2f} ms/step, AUROC "
              f"{out[prec]['image_auroc']} / {out[prec]['pixel_auroc']}", flush=True)
    f, t = out['fp32'], out['tf32']
    same = abs(t['loss'] - f['loss']) <= LOSS_TOL * abs(f['loss']) and abs(t['image_auroc'] - f['image_auroc']) <= 0.01 \
           and abs(t['pixel_auroc'] - f['pixel_auroc']) <= 0.01
    return dict(data=cat, steps=steps, tf32_same_as_fp32=same, faster=min(out, key=lambda k: out[k]['s_per_step']), precisions=out,
                rule=f"tf32 counts as the same when its loss is within {100 * LOSS_TOL:.0f}% of fp32's and both AUROCs within 0.01")


def projection(r:dict)->dict:
    "Time per category (bottle) from the papers' schedules and the measured rates; the per-iteration seconds for batch.GPU_SECONDS"
    s, g = r.get('throughput.svdd_train', {}), r.get('throughput.glance_train', {})
    si, gi = r.get('throughput.svdd_infer', {}), r.get('throughput.glance_infer', {})
    ls, lg = r.get('loop.svdd', {}), r.get('loop.glance', {})
    step = ls.get('s_per_step', s.get('s_per_step'))                 # the real loop's step when measured
    out = {}
    if step:
        out['svdd_train_min'] = SCHEDULE['svdd_steps'] * step / 60
        out['svdd_h'] = out['svdd_train_min'] / 60 + SCHEDULE['svdd_test_images'] * si.get('ms_per_image', 0) / 3.6e6
    if 'stage_b_it_per_s' in g:
        b = lg.get('stage_b_s_per_it', 1 / g['stage_b_it_per_s'])
        out['glance_stage_a_h'] = (SCHEDULE['glance_imagenet'] / g['stage_a_imagenet_it_per_s'] + SCHEDULE['glance_finetune'] / g['stage_a_finetune_it_per_s']) / 3600
        out['glance_stage_b_h'] = SCHEDULE['glance_global'] * b / 3600
        out['glance_h'] = out['glance_stage_a_h'] + out['glance_stage_b_h'] + SCHEDULE['glance_test_images'] * gi.get('ms_per_image', 0) / 3.6e6
        if 'stage_a_imagenet_batch_prep_s' in g:   # file reading and decoding, which DataLoader workers (`workers`) take off the step
            out['glance_imagenet_file_reading_h_one_process'] = SCHEDULE['glance_imagenet'] * g['stage_a_imagenet_batch_prep_s'] / 3600
        out['gpu_seconds'] = dict(svdd=step, glance_imagenet=1 / g['stage_a_imagenet_it_per_s'],   # for batch.GPU_SECONDS
                                  glance_finetune=lg.get('finetune_s_per_it', 1 / g['stage_a_finetune_it_per_s']), glance_global=b)
    return out


# ------------------------------------------------------------------------------------------------ speed options
def _losses(step, n:int, dev)->tuple:
    "Seconds per step over the last n // 2 of `n` steps, and the mean loss of the last n // 2"
    hist, times = [], []
    for it in range(n):
        sync(dev); t = time.perf_counter()
        hist.append(step(it)['loss']); sync(dev); times.append(time.perf_counter() - t)
    k = max(n // 2, 1)
    return float(np.mean(times[-k:])), float(np.mean(hist[-k:]))


def _option_rows(base:tuple, variants:dict, dev, n:int)->dict:
    "Each variant's speed-up and loss change against the fp32 default `base` (s/step, loss)"
    out = dict(default=dict(s_per_step=base[0], loss=base[1]))
    for name, make in variants.items():
        try: s, loss = _losses(make(), n, dev)
        except PartTimeout as e:   # keep what the other variants gave
            out[name] = dict(error=f'{e} (this variant and any after it)'); print(f"      {name}: {e}", flush=True); break
        except Exception as e: out[name] = dict(error=f'{type(e).__name__}: {str(e)[:200]}'); continue
        rel = abs(loss - base[1]) / max(abs(base[1]), 1e-12)
        out[name] = dict(s_per_step=s, speedup=base[0] / s, loss=loss, loss_rel_diff=rel, same_results=rel <= LOSS_TOL)
        if name == 'network_only': out[name] = dict(s_per_step=s, speedup=base[0] / s)   # one fixed batch: a bound, not an option
        print(f"      {name:<22} {base[0] / s:5.2f}x  loss {loss:.4g} vs {base[1]:.4g} ({100 * rel:.2f}%)", flush=True)
    return out


def options_svdd(dev, quick:bool, n:int, compile_ok:bool)->dict:
    "Patch SVDD training step (default precision) with f_small under torch.compile, against the plain step"
    size, nimg, batch = (128, 4, 4) if quick else (256, 32, 64)
    base = _losses(svdd_trainer(dev, nimg, size, batch)['step'], n, dev)
    def compiled():
        tr = svdd_trainer(dev, nimg, size, batch); enc = tr['encoder']; enc.enc = torch.compile(enc.enc); return tr['step']
    return _option_rows(base, dict(torch_compile=compiled) if compile_ok else {}, dev, n)


# ------------------------------------------------------------------------------------------------ profile
def profile_step(step, dev, batches=None, n:int=3)->dict:
    "Wall time of a step, its GPU kernel time, and the time to get its batch; the rest is Python and launches"
    from torch.profiler import profile, ProfilerActivity
    for it in range(2): step(it)
    sync(dev)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == 'cuda' else [])
    with profile(activities=acts) as prof:
        t = time.perf_counter()
        for it in range(2, 2 + n): step(it)
        sync(dev); wall = (time.perf_counter() - t) / n
    ev = prof.key_averages()
    kernel = sum(getattr(e, 'self_device_time_total', getattr(e, 'self_cuda_time_total', 0)) for e in ev) / 1e6 / n
    data = timed(lambda: batches(0), torch.device('cpu'), n, warmup=0) if batches else None
    gpu_ms = lambda e: getattr(e, 'self_device_time_total', getattr(e, 'self_cuda_time_total', 0)) / 1e3 / n
    row = lambda e: dict(op=e.key, self_cpu_ms=e.self_cpu_time_total / 1e3 / n, self_gpu_ms=gpu_ms(e))
    return dict(wall_s=wall, gpu_kernel_s=kernel if dev.type == 'cuda' else None, data_s=data,
                top_ops_by_cpu=[row(e) for e in sorted(ev, key=lambda e: -e.self_cpu_time_total)[:8]],
                top_ops_by_gpu=[row(e) for e in sorted(ev, key=lambda e: -gpu_ms(e))[:8]] if dev.type == 'cuda' else [])


def profile_svdd(dev, quick:bool)->dict:
    tr = svdd_trainer(dev, 4 if quick else 209, 128 if quick else 256, 4 if quick else 64)
    return profile_step(tr['step'], dev, n=1 if quick else 3)


def profile_glance(dev, quick:bool)->dict:
    from glancesvdd.glance.config import GlanceConfig, _stains
    from glancesvdd.glance.train import StainedPairs
    cfg = GlanceConfig()
    b, size = (2, 256) if quick else (64, 256)
    pairs = StainedPairs(images(4 if quick else 16, size), b, 0, 33, **_stains(cfg))
    return profile_step(glance_stage_b(dev, b, 4 if quick else 16, size), dev, batches=lambda it: pairs.plan(it), n=1 if quick else 3)


# ------------------------------------------------------------------------------------------------ batch devices
def pytest_gpu(timeout:float=60)->dict:
    "The suite's other `gpu`-marked tests (tests/test_glance_nets.py), through pytest"
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-m', 'gpu', '-p', 'no:cacheprovider', 'tests/test_glance_nets.py'],
                       cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    last = (r.stdout.strip().splitlines() or [''])[-1]
    return dict(ok=r.returncode == 0, summary=last, **({'output': r.stdout[-2000:] + r.stderr[-1000:]} if r.returncode else {}))


def _gpus_seen_by_the_driver()->int:
    "GPUs that nvidia-smi lists (0 without the driver): a count taken apart from torch"
    try: out = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError): return 0
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    n = sum(line.startswith('GPU ') for line in out.splitlines())
    return n if visible is None else min(n, len([v for v in visible.split(',') if v.strip()]))

def batch_devices()->dict:
    "The devices `glancesvdd batch --executor local` gives its jobs here: one worker per GPU the driver lists"
    from glancesvdd.batch import _devices   # batch imports papermill only to run a notebook, so it imports here too
    how = 'glancesvdd.batch._devices'
    devs, n = _devices('auto'), _gpus_seen_by_the_driver()
    return dict(ok=devs == ([f'cuda:{i}' for i in range(n)] or ['cpu']), visible_gpus=n, devices=devs, how=how)


# ------------------------------------------------------------------------------------------------ report
def hardware(dev)->dict:
    hw = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda, cpu_count=os.cpu_count(),
              torch_threads=torch.get_num_threads(), device=str(dev), platform=platform.platform(),
              settings=dict(cuda_matmul_fp32_precision=torch.backends.cuda.matmul.fp32_precision, cudnn_conv_fp32_precision=torch.backends.cudnn.conv.fp32_precision,
                            cudnn_benchmark=torch.backends.cudnn.benchmark, CUBLAS_WORKSPACE_CONFIG=os.environ.get('CUBLAS_WORKSPACE_CONFIG'),
                            float32_matmul_precision=torch.get_float32_matmul_precision()))
    if dev.type == 'cuda':
        p = torch.cuda.get_device_properties(dev)
        hw |= dict(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1), capability=f'{p.major}.{p.minor}',
                   multiprocessors=p.multi_processor_count, cudnn=torch.backends.cudnn.version())
        try: hw['driver'] = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                                           capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError): pass
    return hw


def _fmt(v):
    if isinstance(v, bool): return 'yes' if v else 'NO'
    if isinstance(v, float): return f'{v:.3g}' if abs(v) < 1e4 else f'{v:,.0f}'
    return str(v)


def _ms(v): return f'{1e3 * v:.2f}' if isinstance(v, (int, float)) else '—'


def markdown(r:dict)->str:
    hw, P = r['hardware'], r['parts']
    L = [f"# GPU check ({hw.get('gpu', hw['device'])}{', quick' if r['args']['quick'] else ''})", '',
         f"torch {hw['torch']}, CUDA {hw['cuda']}, cuDNN {hw.get('cudnn')}, driver {hw.get('driver')}, python {hw['python']}, "
         f"{hw['cpu_count']} CPU cores; commit {r.get('commit')}; {r['started']}; {r['elapsed_s']:.0f} s in all. Command: `{r['command']}`. "
         f"Settings outside the parts that change them: {hw.get('settings')}. Every training run states its `precision`; "
         "evaluation and the correctness parts run in IEEE float32 (TF32 off).", '',
         '| part | status | s | result |', '|---|---|---|---|']
    for name, p in P.items():
        vals = ', '.join(f"{k} {_fmt(v)}" for k, v in p.items() if k not in ('status', 'seconds', 'error', 'traceback', 'ok', 'output')
                         and not isinstance(v, (dict, list)))
        L.append(f"| {name} | {p['status']} | {p.get('seconds', 0):.1f} | {vals}{(' — ' + p['error'][:160]) if 'error' in p else ''} |")
    pr = r.get('projection', {})
    st, si, gt, gi = (P.get(k, {}) for k in ('throughput.svdd_train', 'throughput.svdd_infer', 'throughput.glance_train', 'throughput.glance_infer'))
    gb = gt.get('stage_b', {}).get('fp32', {})   # GlanceConfig's default precision
    v_bank = si.get('bank_build_s')
    rows = [(f"Patch SVDD training step ≤ {TARGETS['svdd_step_ms']} ms (official batch, default settings)", st.get('s_per_step'), TARGETS['svdd_step_ms'] / 1e3),
            (f"Patch SVDD inference ≤ {TARGETS['svdd_infer_ms']} ms per image (embedding + exact search)", si['ms_per_image'] / 1e3 if 'ms_per_image' in si else None, TARGETS['svdd_infer_ms'] / 1e3),
            (f"GLANCE Stage B ≤ {TARGETS['glance_stage_b_ms']} ms per iteration (batch 64, default settings)", gb.get('s_per_it'), TARGETS['glance_stage_b_ms'] / 1e3),
            (f"GLANCE inference ≤ {TARGETS['glance_infer_ms']} ms per image", gi['ms_per_image'] / 1e3 if 'ms_per_image' in gi else None, TARGETS['glance_infer_ms'] / 1e3)]
    L += ['', '## Targets (issue 22, one H200)', '', '| target | measured | met |', '|---|---|---|']
    L += [f"| {t} | {_ms(v)} ms | {_fmt(v <= lim)} |" if v is not None else f"| {t} | — | — |" for t, v, lim in rows]
    L.append(f"| Patch SVDD bottle bank ≤ {TARGETS['svdd_bank_s']} s | {_fmt(v_bank)} s | {_fmt(v_bank <= TARGETS['svdd_bank_s'])} |"
             if v_bank is not None else f"| Patch SVDD bottle bank ≤ {TARGETS['svdd_bank_s']} s | — | — |")
    if pr:
        L += ['', "## Time per category (bottle), from the papers' schedules", '',
              f"Patch SVDD: {SCHEDULE['svdd_steps']:,} steps × the real loop's step → {_fmt(pr.get('svdd_train_min'))} min of training. "
              f"GLANCE: Stage A {_fmt(pr.get('glance_stage_a_h'))} h + Stage B {_fmt(pr.get('glance_stage_b_h'))} h → {_fmt(pr.get('glance_h'))} h; "
              f"the ImageNet stage's file reading would add {_fmt(pr.get('glance_imagenet_file_reading_h_one_process'))} h in one process, "
              f"divided by the DataLoader workers. Seconds per iteration for `glancesvdd.batch.GPU_SECONDS`: {pr.get('gpu_seconds')}."]
    tables = [('Patch SVDD training step by precision (official batch)', st.get('precisions'), 's_per_step', 'gpu_kernel_s_per_step'),
              ('GLANCE Stage-B iteration by variant (batch 64; network_only: one fixed batch, no batch preparation)', gt.get('stage_b'), 's_per_it', 'gpu_kernel_s_per_it')]
    for title, rows_, k1, k2 in tables:
        if not rows_: continue
        L += ['', f'## {title}', '', '| variant | ms | GPU kernels, ms | peak GPU GB |', '|---|---|---|---|']
        L += [f"| {k} | {_ms(v[k1])} | {_ms(v.get(k2))} | {_fmt(v.get('peak_gpu_gb'))} |" for k, v in rows_.items()]
    pc = P.get('precision.svdd', {})
    pc = dict(pc, **pc.get('partial', {}), data=pc.get('data', '(partial)'), steps=pc.get('steps', '?'), rule=pc.get('rule', ''), tf32_same_as_fp32=pc.get('tf32_same_as_fp32'))
    if pc.get('precisions'):
        L += ['', f"## Training precision (Patch SVDD, {pc['data']}, {pc['steps']} steps from seed 0, evaluated in IEEE float32)", '',
              '| precision | mean loss of the last 100 steps | ms/step | image AUROC | pixel AUROC |', '|---|---|---|---|---|']
        L += [f"| {k} | {v['loss']:.4f} | {_ms(v['s_per_step'])} | {v['image_auroc']} | {v['pixel_auroc']} |" for k, v in pc['precisions'].items()]
        if pc['rule']: L += ['', f"{pc['rule']}: {'yes' if pc['tf32_same_as_fp32'] else 'NO'}."]
    o = P.get('options.svdd', {}).get('options')
    if o:
        L += ['', f"## torch.compile (Patch SVDD step; 'same results': mean loss of the last steps within {100 * LOSS_TOL:.0f}%)", '',
              '| option | s/step | speed-up | loss | vs default | same results |', '|---|---|---|---|---|---|']
        for k, v in o.items():
            if 'error' in v: L.append(f"| {k} | — | — | — | — | {v['error'][:100]} |"); continue
            L.append(f"| {k} | {v['s_per_step']:.4f} | {_fmt(v.get('speedup', 1.0))}x | {v['loss']:.4g} | "
                     f"{100 * v.get('loss_rel_diff', 0):.2f}% | {_fmt(v.get('same_results', True))} |")
    for name in ('profile.svdd', 'profile.glance'):
        p = P.get(name, {})
        if 'top_ops_by_cpu' not in p: continue
        L += ['', f"## Profile of one {name.split('.')[1]} training step: wall {_fmt(p['wall_s'])} s, GPU kernels {_fmt(p['gpu_kernel_s'])} s"
              + (f", batch plan (CPU, done by the workers) {_fmt(p['data_s'])} s" if p.get('data_s') is not None else ''), '',
              '| op (most CPU time first, then most GPU time) | self CPU ms | self GPU ms |', '|---|---|---|']
        L += [f"| {o['op'][:60]} | {o['self_cpu_ms']:.2f} | {o['self_gpu_ms']:.2f} |" for o in p['top_ops_by_cpu'] + p.get('top_ops_by_gpu', [])]
    return '\n'.join(L) + '\n'


def run_part(r:dict, name:str, seconds:float, f, out:Path, deadline:float):
    "Run part `name` within its budget (and the global deadline); record, print and save its result"
    left = deadline - time.perf_counter()
    if left < 3:
        r['parts'][name] = dict(status='skipped', seconds=0.0, error='no time left before --deadline')
        print(f"[{r['clock']():6.1f} s] {name}: skipped (deadline)", flush=True); return
    t = time.perf_counter()
    PARTIAL.clear()
    try:
        with budget(min(seconds, left)): res = f()
        status = 'pass' if res.pop('ok', True) else 'FAIL'
    except PartTimeout as e: res, status = dict(error=str(e), **({'partial': dict(PARTIAL)} if PARTIAL else {})), 'timeout'
    except Exception as e:
        res, status = dict(error=f'{type(e).__name__}: {e}', traceback=traceback.format_exc()[-3000:], **({'partial': dict(PARTIAL)} if PARTIAL else {})), 'error'
    res = dict(status=status, seconds=time.perf_counter() - t, **res)
    r['parts'][name] = res
    short = ', '.join(f"{k} {_fmt(v)}" for k, v in res.items() if k not in ('status', 'seconds', 'traceback', 'output')
                      and not isinstance(v, (dict, list)))
    print(f"[{r['clock']():6.1f} s] {name}: {status} ({res['seconds']:.1f} s) {short}", flush=True)
    if status == 'error': print(res['traceback'], flush=True)
    save(r, out)


def _commit()->str:
    try: return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip() or 'unknown'
    except (OSError, subprocess.SubprocessError): return 'unknown'


def save(r:dict, out:Path):
    r['elapsed_s'] = r['clock'](); r['projection'] = projection({k: v for k, v in r['parts'].items()})
    out.mkdir(parents=True, exist_ok=True)
    save_json({k: v for k, v in r.items() if k != 'clock'}, out/f"{r['args']['name']}.json")
    (out/f"{r['args']['name']}.md").write_text(markdown(r))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cuda', help="cuda (default), cuda:1, or cpu (with --quick: the check of the check)")
    ap.add_argument('--quick', action='store_true', help='tiny sizes and few steps (CPU, under a minute)')
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'))
    ap.add_argument('--name', default=None, help='file stem of the results (default gpu_check)')
    ap.add_argument('--deadline', type=float, default=450, help='seconds after which no part starts (default 450: 7.5 min)')
    ap.add_argument('--budget-scale', type=float, default=1.0, help='multiplies every part budget')
    ap.add_argument('--parts', default='all', help="comma-separated prefixes of the parts to run (e.g. 'correctness,throughput')")
    ap.add_argument('--no-compile', action='store_true', help='skip the torch.compile variant')
    ap.add_argument('--data', default=None, help='an MVTec-layout root holding real bottle (e.g. data/mvtec_ad): release parity, '
                    'inference, the loops and the precision runs then use it; without it they use synthetic data')
    ap.add_argument('--precision-steps', type=int, default=1000, help='training steps of each precision run (default 1000)')
    ap.add_argument('--commit', default=None, help='the commit measured (default: git rev-parse HEAD, where .git is there)')
    a = ap.parse_args(argv)
    a.name = a.name or 'gpu_check'
    t0 = time.perf_counter()
    deadline = t0 + a.deadline
    dev = get_device(a.device)
    q, bs = a.quick, a.budget_scale
    data = Path(a.data) if a.data else None
    if data is not None and not (data/'bottle'/'train').is_dir(): ap.error(f"--data {data}: no bottle/train folder there")
    r = dict(args=vars(a), command='python benchmarks/gpu_check.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
             started=time.strftime('%Y-%m-%d %H:%M:%S %Z'), commit=a.commit or _commit(), hardware=hardware(dev), parts={},
             clock=lambda: time.perf_counter() - t0)
    out = Path(a.out)
    print(f"GPU check on {r['hardware'].get('gpu', dev)} (torch {torch.__version__}); results go to {out/a.name}.json/.md", flush=True)
    work = Path(tempfile.mkdtemp(prefix='gpu_check_'))
    compile_ok = not a.no_compile and not q and dev.type == 'cuda'
    parts = [  # name, budget in seconds (GPU), function
        ('env.batch_devices', 5, batch_devices),
        *[(f'correctness.{k}', (60 if k in ('resume', 'smoke') else 25), (lambda f=f, k=k: f(dev, q, work/k) if k in ('resume', 'smoke') else f(dev, q)))
          for k, f in CHECKS.items()],
        ('correctness.release_bottle', 40, lambda: check_release_bottle(dev, q, data)),
        *([('correctness.pytest_gpu', 90, pytest_gpu)] if dev.type == 'cuda' else []),
        ('throughput.svdd_train', 60, lambda: bench_svdd_train(dev, q, 1 if q else 50)),
        ('throughput.svdd_infer', 45, lambda: bench_svdd_infer(dev, q, 2 if q else 32, data)),
        ('throughput.glance_train', 90, lambda: bench_glance_train(dev, q, 1 if q else 40)),
        ('throughput.glance_infer', 25, lambda: bench_glance_infer(dev, q, 1 if q else 16)),
        ('loop.svdd', 60, lambda: loop_svdd(dev, q, work/'loops', data)),
        ('loop.glance', 90, lambda: loop_glance(dev, q, work/'loops', data)),
        ('precision.svdd', 240, lambda: precision_svdd(dev, q, work/'precision', data, a.precision_steps)),
        ('profile.svdd', 15, lambda: profile_svdd(dev, q)),
        ('profile.glance', 20, lambda: profile_glance(dev, q)),
        ('options.svdd', 90, lambda: dict(options=options_svdd(dev, q, 2 if q else 30, compile_ok))),
    ]
    wanted = [p.strip() for p in a.parts.split(',')] if a.parts != 'all' else None
    try:
        for name, seconds, f in parts:
            if wanted and not any(name.startswith(w) for w in wanted): continue
            run_part(r, name, seconds * bs * (3 if q and dev.type == 'cpu' else 1), f, out, deadline)
    finally:
        save(r, out)
        import shutil; shutil.rmtree(work, ignore_errors=True)
    bad = [k for k, v in r['parts'].items() if k.startswith(('correctness', 'env')) and v['status'] not in ('pass', 'skipped')]
    print(f"done in {r['clock']():.0f} s; {len(bad)} correctness part(s) not passed{': ' + ', '.join(bad) if bad else ''}", flush=True)
    print(markdown(r), flush=True)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
