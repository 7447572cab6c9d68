"""Patch SVDD, glancesvdd and the official code side by side: the same work, timed the same way, in one run on one machine.

    git clone https://github.com/nuclearboy95/Anomaly-Detection-PatchSVDD-PyTorch ../patchsvdd-official
    git -C ../patchsvdd-official checkout 934d6238e5e0ad511e2a0e7fc4f4899010e7d892
    pip install ngt            # the official K=32 search (ngtpy)
    python benchmarks/bench_svdd_official.py --official ../patchsvdd-official --threads 2 --passes 3

Writes benchmarks/results/svdd_vs_official_cpu[_<tag>].json and .md. Every ratio in the .md compares two figures
measured in this one run.

What is timed, on both sides alike:
- the same inputs: synthetic 256-px images of MVTec AD bottle's sizes (209 training images for the bank, 83 test
  images), the released bottle encoder (tests/fixtures/patchsvdd_official), the same torch thread count;
- the same protocol: one untimed warm-up (a few test images through the whole path, index builds included), then
  `--passes` timed passes over the whole test set; each figure is the median over the passes;
- index builds apart from queries: ours is `build_index` (the k-means partition, K=64 and K=32); the official is
  sklearn's KDTree (K=64) and NGT's `create` + `batch_insert` (K=32), timed by wrappers around those library calls
  (the official functions themselves run unchanged); per-image figures are given with and without the builds;
- a query pass is the whole test-time path: embedding of the test images (ours dense; official per patch, batches
  of 64), the nearest-neighbour search at both scales, the maps and their product;
- training: the same number of steps at the official batch on both sides, after one warm-up step.
The bank's features come from glancesvdd's dense embedding on both sides (equal to the official per-patch
embedding, tests/test_svdd.py): the official per-patch embedding of 209 training images alone takes about half an
hour on two cores, and it is not what is compared. The official code has no CPU switch: `.cuda()` is made a no-op
on tensors, the only change. Results are also compared: the fraction of K=32 patch scores on which the official
(approximate) search equals our exact one.
The load average is recorded at the start and the end; a run that began on a busy machine is flagged in the .md.
"""
from __future__ import annotations
import argparse, contextlib, os, statistics, subprocess, sys, time
from pathlib import Path

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # as bench_svdd.py

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_svdd import ROOT, images, hardware, peak_rss_gb, result_name, bench_train
from glancesvdd.core import save_json
from glancesvdd.svdd.model import load_official_encoder
from glancesvdd.svdd.infer import build_index, embed_dense, score_images
from glancesvdd.svdd.model import mean_image, standardise

OFFICIAL_COMMIT = '934d6238e5e0ad511e2a0e7fc4f4899010e7d892'


def import_official(path:Path):
    "The official modules from a checkout; a clear message when the checkout or ngtpy is missing"
    if not (path/'codes'/'networks.py').exists():
        sys.exit(f"{path} is not a checkout of the official Patch SVDD code (no codes/networks.py). Get it with\n"
                 f"  git clone https://github.com/nuclearboy95/Anomaly-Detection-PatchSVDD-PyTorch {path}")
    try: import ngtpy  # noqa: F401
    except ImportError: sys.exit("the official K=32 search needs ngtpy: pip install ngt")
    sys.path.insert(0, str(path))
    from codes import networks, datasets, utils, inspection
    torch.Tensor.cuda = lambda self, *a, **k: self  # the official code calls .cuda(); run it on the CPU
    return networks, datasets, utils, inspection


def checkout_commit(path:Path) -> str:
    "Which official code ran: the checkout's commit"
    try: return subprocess.run(['git', '-C', str(path), 'rev-parse', 'HEAD'], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError): return f'unknown ({path} is not a git checkout)'


class BuildTimer:
    "Time spent inside the official code's index builds: wraps sklearn's KDTree and ngtpy's create/batch_insert"
    def __init__(self): self.s = dict(k64=0.0, k32=0.0)

    @contextlib.contextmanager
    def active(self):
        import ngtpy, sklearn.neighbors
        orig = ngtpy.create, ngtpy.Index.batch_insert, sklearn.neighbors.KDTree
        def timed(key, f):
            def g(*a, **k):
                t = time.perf_counter()
                try: return f(*a, **k)
                finally: self.s[key] += time.perf_counter() - t
            return g
        ngtpy.create, ngtpy.Index.batch_insert = timed('k32', orig[0]), timed('k32', orig[1])
        sklearn.neighbors.KDTree = timed('k64', orig[2])  # search_NN imports it inside the call, so the wrapper is found
        try: yield self
        finally: ngtpy.create, ngtpy.Index.batch_insert, sklearn.neighbors.KDTree = orig


def nhwc(x:torch.Tensor) -> np.ndarray:
    "Normalised images (N, 3, S, S) as the official NHWC float32 array"
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy().astype(np.float32))


def official_train(off, x:np.ndarray, steps:int, lambda_value:float=1e-3) -> dict:  # the official README's λ
    networks, datasets, utils, _ = off
    torch.manual_seed(0); np.random.seed(0)
    enc = networks.EncoderHier(64, 64)
    cls = {K: networks.PositionClassifier(K, 64) for K in (64, 32)}
    modules = [enc, *cls.values()]
    opt = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=1e-4)
    train_x = utils.NHWC2NCHW(x)
    ds = {f'{kind}_{K}': cls_(train_x, K=K, repeat=100)
          for kind, cls_ in (('pos', datasets.PositionDataset), ('svdd', datasets.SVDD_Dataset)) for K in (64, 32)}
    loader = torch.utils.data.DataLoader(utils.DictionaryConcatDataset(ds), batch_size=64, shuffle=True,
                                         num_workers=2, pin_memory=True)
    for m in modules: m.train()
    times, it = [], iter(loader)
    for i in range(steps + 1):
        t = time.perf_counter()
        d = next(it)
        opt.zero_grad()
        loss = (networks.PositionClassifier.infer(cls[64], enc, d['pos_64']) + networks.PositionClassifier.infer(cls[32], enc.enc, d['pos_32'])
                + lambda_value * (datasets.SVDD_Dataset.infer(enc, d['svdd_64']) + datasets.SVDD_Dataset.infer(enc.enc, d['svdd_32'])))
        loss.backward(); opt.step()
        if i: times.append(time.perf_counter() - t)  # the first step warms up (and starts the workers)
    return dict(steps=steps, s_per_step=statistics.median(times), s_per_step_all=times)


def official_pass(off, enc, bank:dict, test:np.ndarray) -> dict:
    "inspection.eval_embeddings_NN_multiK's path for a test set: embed, KDTree K=64, NGT K=32 (index built inside), maps"
    _, _, utils, inspection = off
    timer = BuildTimer()
    with timer.active():
        t = time.perf_counter()
        e64, e32 = inspection.infer(test, enc, K=64, S=16), inspection.infer(test, enc.enc, K=32, S=4)
        m64 = inspection.measure_emb_NN(e64, bank[64], method='kdt')
        m32 = inspection.measure_emb_NN(e32, bank[32], method='ngt')
        maps = utils.distribute_scores(m64, (256, 256), K=64, S=16) * utils.distribute_scores(m32, (256, 256), K=32, S=4)
        total = time.perf_counter() - t
    build = timer.s['k64'] + timer.s['k32']
    return dict(build_k64_s=timer.s['k64'], build_k32_s=timer.s['k32'], query_s=total - build, total_s=total,
                patch_scores_k32=m32, image_scores=maps.max(axis=(1, 2)))


def ours_pass(enc, feats:dict, mean, test:torch.Tensor, batch:int=16) -> dict:
    "Our path for a test set: build the two indices, then score_images (dense embedding, exact search, maps)"
    t = time.perf_counter(); ix64 = build_index(feats[64]); t64 = time.perf_counter() - t
    t = time.perf_counter(); ix32 = build_index(feats[32]); t32 = time.perf_counter() - t
    bank = {64: dict(features=feats[64], index=ix64), 32: dict(features=feats[32], index=ix32), 'mean': mean, 'scales': {64: 16, 32: 4}}
    t = time.perf_counter()
    parts = [score_images(enc, test[i:i + batch], bank, device='cpu') for i in range(0, len(test), batch)]
    query = time.perf_counter() - t
    return dict(build_k64_s=t64, build_k32_s=t32, query_s=query, total_s=t64 + t32 + query,
                patch_scores_k32=torch.cat([p['patch_scores_k32'] for p in parts]).numpy(),
                image_scores=torch.cat([p['image_scores'] for p in parts]).numpy())


def summarise(passes:list, n:int) -> dict:
    med = lambda k: statistics.median(p[k] for p in passes)
    return dict(passes=len(passes), build_k64_s=med('build_k64_s'), build_k32_s=med('build_k32_s'), query_s=med('query_s'),
                query_s_per_image=med('query_s') / n, s_per_image_incl_build=med('total_s') / n,
                total_s_all=[p['total_s'] for p in passes])


def markdown(r:dict) -> str:
    hw, o, f = r['hardware'], r['ours'], r['official']
    la0, la1, busy = hw['load_average_at_start'][0], r['load_average_at_end'][0], r['busy']
    ratio = lambda a, b: f'{a / b:.1f}x'
    lines = [f"# Patch SVDD: glancesvdd and the official code, side by side ({hw['device']})", '',
             f"One run of benchmarks/bench_svdd_official.py on {hw['cpu']}, {hw['cpu_count']} cores, torch {hw['torch']} with "
             f"{hw['torch_threads']} threads on both sides; 1-minute load average {la0:.1f} at start and {la1:.1f} at end"
             + (" — **the machine was busy when this run started: treat the figures as rough**" if busy else '') + ". "
             f"Official code: commit {r['official_commit']}. Inputs: synthetic 256-px images, a {r['bank_images']}-image bank "
             f"({r['bank_k32']:,} K=32 and {r['bank_k64']:,} K=64 features) and {r['test_images']} test images (MVTec AD bottle has "
             f"209 and 83), the released bottle encoder. One warm-up, then the median of {o['passes']} timed pass(es) per side.", '',
             '| measure | official code | glancesvdd | official / glancesvdd |', '|---|---|---|---|',
             f"| training, s per step (64 pairs of each of 4 kinds, median of {r['train_steps']}) | {r['official_train']['s_per_step']:.2f} "
             f"| {r['ours_train']['s_per_step']:.2f} | {ratio(r['official_train']['s_per_step'], r['ours_train']['s_per_step'])} |",
             f"| index build K=64, s (official: KDTree; ours: k-means partition) | {f['build_k64_s']:.1f} | {o['build_k64_s']:.1f} | {ratio(f['build_k64_s'], o['build_k64_s'])} |",
             f"| index build K=32, s (official: NGT, approximate; ours: k-means partition, exact search) | {f['build_k32_s']:.1f} | {o['build_k32_s']:.1f} | {ratio(f['build_k32_s'], o['build_k32_s'])} |",
             f"| per test image without the builds, s (embedding, search at both scales, maps) | {f['query_s_per_image']:.3f} | {o['query_s_per_image']:.3f} | {ratio(f['query_s_per_image'], o['query_s_per_image'])} |",
             f"| per test image with the builds spread over the {r['test_images']} images, s | {f['s_per_image_incl_build']:.3f} | {o['s_per_image_incl_build']:.3f} | {ratio(f['s_per_image_incl_build'], o['s_per_image_incl_build'])} |",
             '', f"The official K=32 search (NGT, default settings) returned the exact nearest distance for {r['ngt_exact_fraction']:.1%} of the "
             f"test patches; its scores exceed the exact ones by {r['ngt_mean_excess']:.2%} on average. Our search is exact by construction "
             f"(checked against a float64 brute force in nbs/22_svdd_infer.ipynb and bench_svdd.py). Image scores: largest difference "
             f"between the two sides {r['image_score_max_diff']:.2e}.",
             f"Total seconds per pass (builds included): official {', '.join(f'{x:.1f}' for x in f['total_s_all'])}; "
             f"glancesvdd {', '.join(f'{x:.1f}' for x in o['total_s_all'])}. Peak RSS of the process {r['peak_rss_gb']:.2f} GB."]
    return '\n'.join(lines) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--official', required=True, type=Path, help='a checkout of the official repository')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--bank-images', type=int, default=209, help='training images in the bank (209 = MVTec AD bottle)')
    ap.add_argument('--test-images', type=int, default=83, help='test images (83 = MVTec AD bottle)')
    ap.add_argument('--warmup-images', type=int, default=2)
    ap.add_argument('--passes', type=int, default=3, help='timed passes over the test set per side; medians are reported')
    ap.add_argument('--train-steps', type=int, default=3)
    ap.add_argument('--category', default='logo', help='synthetic category (glancesvdd.data.SYNTHETIC_CATEGORIES)')
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'))
    ap.add_argument('--tag', default='', help="suffix of the result files' names, e.g. the machine")
    a = ap.parse_args()
    off = import_official(a.official.resolve())
    torch.set_num_threads(a.threads)
    dev = torch.device('cpu')
    r = dict(args={k: str(v) for k, v in vars(a).items()}, hardware=hardware(dev), official_commit=checkout_commit(a.official))
    r['busy'] = r['hardware']['load_average_at_start'][0] > 0.5 * os.cpu_count()
    train, test = images(a.bank_images, 'train', a.category, 256), images(a.test_images, 'test', a.category, 256)
    r['ours_train'] = bench_train(train, dev, a.train_steps)
    mean = mean_image(train)
    r['official_train'] = official_train(off, nhwc(standardise(train, mean)), a.train_steps)
    r['train_steps'] = a.train_steps
    print(f"training s/step: official {r['official_train']['s_per_step']:.2f}, ours {r['ours_train']['s_per_step']:.2f}", flush=True)

    mine = load_official_encoder(ROOT/'tests'/'fixtures'/'patchsvdd_official'/'bottle_enchier.pkl')
    enc = off[0].EncoderHier(64, 64); enc.load_state_dict(mine.state_dict()); enc.eval()  # the same weights in the official module
    emb = embed_dense(mine, standardise(train, mean))
    feats = {K: e.reshape(-1, e.shape[-1]) for K, e in emb.items()}
    bank_np = {K: f.numpy() for K, f in feats.items()}
    x_test = nhwc(standardise(test, mean))
    r.update(bank_images=a.bank_images, test_images=a.test_images, bank_k32=len(feats[32]), bank_k64=len(feats[64]))

    w = a.warmup_images  # warm-up: the whole path on a few images, builds included, untimed
    official_pass(off, enc, bank_np, x_test[:w]); ours_pass(mine, feats, mean, test[:w])
    off_passes, our_passes = [], []
    for k in range(a.passes):
        off_passes.append(official_pass(off, enc, bank_np, x_test))
        our_passes.append(ours_pass(mine, feats, mean, test))
        print(f"pass {k + 1}: official {off_passes[-1]['total_s']:.1f} s, ours {our_passes[-1]['total_s']:.1f} s", flush=True)
    r['official'], r['ours'] = summarise(off_passes, a.test_images), summarise(our_passes, a.test_images)
    ngt, exact = off_passes[0]['patch_scores_k32'].reshape(-1), our_passes[0]['patch_scores_k32'].reshape(-1)
    r['ngt_exact_fraction'] = float(np.mean(np.abs(ngt - exact) <= 1e-5 + 1e-4 * exact))
    r['ngt_mean_excess'] = float(np.mean(ngt) / np.mean(exact) - 1)
    r['image_score_max_diff'] = float(np.abs(off_passes[0]['image_scores'] - our_passes[0]['image_scores']).max())
    r['peak_rss_gb'], r['load_average_at_end'] = peak_rss_gb(), os.getloadavg()
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    name = result_name('svdd_vs_official', dev.type, a.tag)
    save_json(r, out/f'{name}.json')
    (out/f'{name}.md').write_text(markdown(r))
    print(markdown(r))


if __name__ == '__main__':
    main()
