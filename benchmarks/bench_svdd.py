"""Patch SVDD speed and memory: training seconds per step at the official batch, inference seconds per test image
with a bottle-sized feature bank (exact nearest-neighbour search), and peak memory.

    python benchmarks/bench_svdd.py --device cpu --threads 2
    python benchmarks/bench_svdd.py --device cuda

Writes benchmarks/results/svdd_<device type>[_<tag>].json and .md (--tag: to keep figures of several machines).

- Training: the real step of glancesvdd.svdd.train (sampling, crops, noise, one f_small call, losses, Adam) at the
  official batch, 64 pairs of each of the four kinds (1,280 32x32 forwards per step).
- Inference: `score_images` (dense embedding, exact search at both scales, maps) on test images, against a bank
  built from `--bank-images` training images (209 = MVTec AD bottle: 679,041 K=32 and 35,321 K=64 features).
  Images are synthetic (glancesvdd.data.synthetic_sample, no MVTec AD here). The encoder is the official release's
  trained `bottle` checkpoint (tests/fixtures/patchsvdd_official), so the features have a trained encoder's structure,
  which the pruned exact search exploits; `--encoder random` uses a randomly initialised one instead.
- The official code is timed beside ours, in one run on one machine, by benchmarks/bench_svdd_official.py
  (svdd_vs_official_*.md): ratios come from there, never from figures of two machines.
"""
from __future__ import annotations
import argparse, os, platform, resource, statistics, time
from pathlib import Path

# On a CPU shared with other jobs, OpenMP threads that spin while they wait for a descheduled partner make every
# parallel torch operation many times slower (measured here: 14x on the K=32 search); sleeping waits avoid that.
# It must be set before torch starts its thread pool.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np
import torch

from glancesvdd.core import get_device, save_json
from glancesvdd.data import synthetic_sample, SYNTHETIC_DEFECTS
from glancesvdd.svdd.model import SvddEncoder, load_official_encoder
from glancesvdd.svdd.config import SvddConfig
from glancesvdd.svdd.train import make_trainer
from glancesvdd.svdd.model import mean_image, standardise
from glancesvdd.svdd.infer import build_bank, score_images, embed_dense, nn_brute

ROOT = Path(__file__).resolve().parents[1]


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()


def hardware(dev) -> dict:
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor()) \
        if os.path.exists('/proc/cpuinfo') else platform.processor()
    hw = dict(cpu=cpu, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
              python=platform.python_version(), device=str(dev), omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'),
              load_average_at_start=os.getloadavg())
    if dev.type == 'cuda': hw['gpu'] = torch.cuda.get_device_name(dev)
    return hw


def images(n:int, split:str, category:str, size:int, seed:int=0) -> torch.Tensor:
    "n synthetic images (n, 3, S, S) in [0, 1]; test images alternate good and defective"
    kinds = ['good'] if split == 'train' else ['good', *SYNTHETIC_DEFECTS]
    a = [synthetic_sample(category, kinds[i % len(kinds)], i, split, seed, size)['image'] for i in range(n)]
    return torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float() / 255


def result_name(kind:str, device_type:str, tag:str='') -> str:
    "File stem of a benchmark's results: svdd_cpu, svdd_cpu_epyc, svdd_vs_official_cpu, ..."
    return f"{kind}_{device_type}{'_' + tag if tag else ''}"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def bench_train(x, dev, steps:int) -> dict:
    cfg = SvddConfig(device=str(dev))  # official batch: 64 pairs of each kind
    tr = make_trainer(cfg, standardise(x, mean_image(x)).to(dev))
    tr['step'](0); sync(dev)  # warm-up
    t, c = time.perf_counter(), time.process_time()
    for it in range(1, steps + 1): tr['step'](it)
    sync(dev)
    s = (time.perf_counter() - t) / steps
    return dict(steps=steps, batch_pairs_per_kind=cfg.batch_size, s_per_step=s, steps_per_s=1 / s,
                cpu_s_per_step=(time.process_time() - c) / steps)


def bench_infer(enc, train, test, dev, brute_images:int, repeats:int=1) -> dict:
    t = time.perf_counter(); bank = build_bank(enc, train); t_bank = time.perf_counter() - t
    score_images(enc, test[:1], bank, device=dev)  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):                       # the median of a few passes: other jobs on a shared machine add noise
        sync(dev); t, c = time.perf_counter(), time.process_time()
        out = score_images(enc, test, bank, device=dev)
        sync(dev); walls.append((time.perf_counter() - t) / len(test)); cpus.append((time.process_time() - c) / len(test))
    s = statistics.median(walls)
    res = dict(bank_images=len(train), bank_k32=len(bank[32]['features']), bank_k64=len(bank[64]['features']),
               test_images=len(test), bank_build_s=t_bank, s_per_image=s, images_per_s=1 / s, repeats=repeats,
               s_per_image_all=walls, cpu_s_per_image=statistics.median(cpus))
    if brute_images:  # the same queries through float64 brute force: the time exact search would take unpruned
        q = embed_dense(enc, standardise(test[:brute_images], bank['mean']))[32].reshape(-1, 64)
        t = time.perf_counter(); d, _ = nn_brute(q, bank[32]['features'].to(dev)); sync(dev)
        res['brute_force_k32_s_per_image'] = (time.perf_counter() - t) / brute_images
        res['max_abs_diff_vs_brute_force'] = float((d.cpu().float() - out['patch_scores_k32'][:brute_images].flatten()).abs().max())
    return res


def markdown(r:dict) -> str:
    hw, tr, inf = r['hardware'], r['train'], r['infer']
    lines = [f"# Patch SVDD benchmark ({hw['device']})", '',
             f"Machine: {hw['cpu']}, {hw['cpu_count']} cores, torch {hw['torch']} with {hw['torch_threads']} threads"
             + (f", GPU {hw['gpu']}" if 'gpu' in hw else '') + "; 1-minute load average "
             f"{hw['load_average_at_start'][0]:.1f} at start and {r['load_average_at_end'][0]:.1f} at end (this job adds 1-2; more: "
             f"other jobs shared the cores); OMP_WAIT_POLICY={hw['omp_wait_policy']}.", '',
             '| measure | glancesvdd |', '|---|---|',
             f"| training, s per step (64 pairs of each of 4 kinds) | {tr['s_per_step']:.2f} |",
             f"| inference, s per test image ({inf['bank_images']}-image bank, exact search) | {inf['s_per_image']:.3f} |",
             *([f"| inference, s per test image ({r['infer_small_bank']['bank_images']}-image bank, exact search) | "
                f"{r['infer_small_bank']['s_per_image']:.3f} |"] if 'infer_small_bank' in r else []),
             f"| peak RSS, GB | {r['peak_rss_gb']:.2f} |", '',
             f"CPU time (all threads): {tr['cpu_s_per_step']:.2f} s per training step, {inf['cpu_s_per_image']:.3f} s per test image; "
             "about the wall time means one core's worth of work, twice the wall time both cores.", '',
             f"Bank: {inf['bank_k32']:,} K=32 and {inf['bank_k64']:,} K=64 features, built in {inf['bank_build_s']:.1f} s "
             f"(dense embedding + k-means index, once per run). Test images: {inf['test_images']}; inference times are the median of "
             f"{inf['repeats']} passes over them (all passes, 209-image bank: {', '.join(f'{x:.3f}' for x in inf['s_per_image_all'])} s). "
             f"Encoder: {r['encoder']}. "
             'Images: synthetic (glancesvdd.data.synthetic_sample), 256x256.', '',
             "The official code, timed beside glancesvdd in one run on one machine, index builds apart from queries: "
             "benchmarks/bench_svdd_official.py (svdd_vs_official_cpu*.md)."]
    if 'brute_force_k32_s_per_image' in inf:
        lines += ['', f"Exactness: the K=32 scores of {r['args']['brute_images']} test image(s) equal a float64 brute-force "
                  f"search to {inf['max_abs_diff_vs_brute_force']:.1e}; that brute force takes "
                  f"{inf['brute_force_k32_s_per_image']:.1f} s per image for K=32 alone."]
    return '\n'.join(lines) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default: torch default)')
    ap.add_argument('--bank-images', type=int, default=209, help='training images in the bank (209 = bottle)')
    ap.add_argument('--test-images', type=int, default=10)
    ap.add_argument('--train-steps', type=int, default=5)
    ap.add_argument('--repeats', type=int, default=3, help='timed inference passes; the median is reported')
    ap.add_argument('--brute-images', type=int, default=1, help='test images also searched by brute force (0: skip)')
    ap.add_argument('--small-bank-images', type=int, default=20, help="also time a bank of this many images, the "
                    "official measurement's setting (0: skip)")
    ap.add_argument('--encoder', default='official', choices=['official', 'random'])
    ap.add_argument('--category', default='logo', help='synthetic category (glancesvdd.data.SYNTHETIC_CATEGORIES)')
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'))
    ap.add_argument('--tag', default='', help="suffix of the result files' names, e.g. the machine ('epyc')")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    dev = get_device(a.device)
    torch.manual_seed(0)
    enc = (load_official_encoder(ROOT/'tests'/'fixtures'/'patchsvdd_official'/'bottle_enchier.pkl') if a.encoder == 'official'
           else SvddEncoder().eval()).to(dev)
    r = dict(args=vars(a), hardware=hardware(dev),
             encoder='official release, bottle checkpoint' if a.encoder == 'official' else 'random initialisation')
    train, test = images(a.bank_images, 'train', a.category, 256), images(a.test_images, 'test', a.category, 256)
    r['train'] = bench_train(train, dev, a.train_steps)
    print(f"training: {r['train']['s_per_step']:.2f} s/step", flush=True)
    r['infer'] = bench_infer(enc, train, test, dev, a.brute_images, a.repeats)
    print(f"inference: {r['infer']['s_per_image']:.3f} s/image (bank {r['infer']['bank_k32']:,} K=32 features)", flush=True)
    if a.small_bank_images:  # the official measurement's setting: a 20-image bank
        r['infer_small_bank'] = bench_infer(enc, train[:a.small_bank_images], test, dev, 0, a.repeats)
        print(f"inference, {a.small_bank_images}-image bank: {r['infer_small_bank']['s_per_image']:.3f} s/image", flush=True)
    r['peak_rss_gb'] = peak_rss_gb()
    if dev.type == 'cuda': r['peak_cuda_gb'] = torch.cuda.max_memory_allocated(dev) / 2**30
    r['load_average_at_end'] = os.getloadavg()
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    name = result_name('svdd', dev.type, a.tag)
    save_json(r, out/f'{name}.json')
    (out/f'{name}.md').write_text(markdown(r))
    print(markdown(r))


if __name__ == '__main__':
    main()
