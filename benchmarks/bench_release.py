"""The release route's speed: all 15 MVTec AD categories scored with released Patch SVDD encoders, one command.

    python benchmarks/bench_release.py --threads 2                     # the two checkpoints of tests/fixtures
    python benchmarks/bench_release.py --release data/patchsvdd_release # the 15 released checkpoints

Writes benchmarks/results/release_<device type>[_<tag>].json and .md (--tag: to keep figures of several machines).

- Data: synthetic categories (glancesvdd.data.make_synthetic_mvtec) with MVTec AD's sizes, per category its number of
  training images (60 to 391) and test images (42 to 167, the same good/defective split), 256 px, under the MVTec AD
  names; written once to --data (not timed) and reused.
- Route: `glancesvdd evaluate svdd --release DIR --categories all` as a user runs it (papermill, one run folder per
  category): the dense embedding of the training set (the bank), its index, the exact search for every test patch,
  the maps and the metrics, papermill's kernel start included. The time per category is the batch's own record
  (runs/batch_summary.json); the total is the command's wall time. `--mode library` calls prepare_release_run,
  infer_svdd and evaluate_run in this process instead and splits each category's time into bank and scoring.
- Encoders: with --release, each category's released file; without it, the released bottle file (objects) and wood
  file (textures) of tests/fixtures stand in for all 15 (scored with --allow-modified, recorded in the results): the
  search's speed depends on the trained features' structure, not on which category the encoder was trained on.
- Parallelism: the command's own (glancesvdd.batch.local_plan): on a CPU, 2 categories at once, each kernel with half the
  threads (--threads 2: one each); --workers 1 scores one category at a time with all of them.
- Target (issue 13): all 15 categories within 15 minutes on 2 CPU cores, exact search, banks built included.
"""
from __future__ import annotations
import argparse, os, platform, shutil, subprocess, sys, time
from pathlib import Path

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')   # sleeping OpenMP waits on a shared CPU (bench_svdd.py)

import torch

from glancesvdd.batch import Job, local_plan
from glancesvdd.core import load_json, save_json
from glancesvdd.data import MVTEC_TEXTURES, make_synthetic_mvtec, _images
from glancesvdd.svdd.release import release_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT/'tests'/'fixtures'/'patchsvdd_official'
TARGET_S = 15 * 60

MVTEC_SIZES = {  # MVTec AD: (train images, test images, of which good)
    'bottle': (209, 83, 20), 'cable': (224, 150, 58), 'capsule': (219, 132, 23), 'carpet': (280, 117, 28),
    'grid': (264, 78, 21), 'hazelnut': (391, 110, 40), 'leather': (245, 124, 32), 'metal_nut': (220, 115, 22),
    'pill': (267, 167, 26), 'screw': (320, 160, 41), 'tile': (230, 117, 33), 'toothbrush': (60, 42, 12),
    'transistor': (213, 100, 60), 'wood': (247, 79, 19), 'zipper': (240, 151, 32)}
DEFECTS = ('color', 'hole', 'paste', 'scratch', 'stain')
SOURCE = {c: ('brick', 'grass', 'gravel')[i % 3] if c in MVTEC_TEXTURES else 'logo' for i, c in enumerate(MVTEC_SIZES)}


def sizes(category:str, scale:float=1.0) -> tuple:
    "(train, test, good test) images of `category`, scaled (1.0: MVTec AD's counts)"
    return tuple(max(1, round(n * scale)) for n in MVTEC_SIZES[category]) if scale != 1 else MVTEC_SIZES[category]


def write_data(root:Path, categories, scale:float=1.0) -> Path:
    "Synthetic categories with MVTec AD's image counts under MVTec AD's names (skipped when already there)"
    for c in categories:
        n_train, n_test, n_good = sizes(c, scale)
        n_def, extra = divmod(max(n_test - n_good, len(DEFECTS)), len(DEFECTS))
        d = root/c
        if d.is_dir() and len(_images(d/'train'/'good')) == n_train: continue
        print(f"writing synthetic {c}: {n_train} train, {n_test} test images", flush=True)
        tmp = root/'.src'; shutil.rmtree(tmp, ignore_errors=True)
        make_synthetic_mvtec(tmp, [SOURCE[c]], n_train=n_train, n_test_good=n_good + extra, n_test_defect=n_def)
        shutil.rmtree(d, ignore_errors=True); (tmp/SOURCE[c]).rename(d); shutil.rmtree(tmp)
    return root


def stand_in_release(root:Path, categories) -> Path:
    "A release folder where the two fixture files stand in for every category"
    for c in categories:
        f = release_checkpoint(root, c); f.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIX/f"{'wood' if c in MVTEC_TEXTURES else 'bottle'}_enchier.pkl", f)
    return root


def hardware() -> dict:
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor()) \
        if os.path.exists('/proc/cpuinfo') else platform.processor()
    return dict(cpu=cpu, cpu_count=os.cpu_count(), torch=torch.__version__, python=platform.python_version(),
                omp_num_threads=os.environ.get('OMP_NUM_THREADS'), load_average_at_start=os.getloadavg())


def run_cli(release, data, runs, categories, device, modified, workers=0) -> dict:
    args = [str(Path(sys.executable).parent/'glancesvdd'), 'evaluate', 'svdd', '--release', str(release), '--categories',
            ','.join(categories), '--data', str(data), '--runs', str(runs), '--device', device, '--workers', str(workers),
            *(['--allow-modified'] if modified else [])]
    t0 = time.time(); r = subprocess.run(args, capture_output=True, text=True); total = time.time() - t0
    if r.returncode: raise SystemExit(f"the route failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    done = {x['category']: x for x in load_json(Path(runs)/'batch_summary.json')['results']}
    per = {c: dict(seconds=done[c]['seconds'], image_auroc=done[c]['metrics']['image_auroc']) for c in categories}
    n, _, threads = local_plan([Job('svdd-release', c, device=device) for c in categories], workers)   # as the command plans it
    return dict(total_s=total, per_category=per, runs_at_once=n, threads_per_run=threads or torch.get_num_threads())


def run_library(release, data, runs, categories, device, modified) -> dict:
    from glancesvdd.svdd.config import SvddConfig
    from glancesvdd.svdd.release import prepare_release_run, release_run_path, release_info
    from glancesvdd.svdd.infer import infer_svdd
    from glancesvdd.metrics import evaluate_run
    per, t_all = {}, time.time()
    for c in categories:
        cfg = SvddConfig(category=c, data_root=str(data), device=device)
        t0 = time.time(); run = prepare_release_run(cfg, release, release_run_path(c, runs), modified, progress=False)
        t1 = time.time(); infer_svdd(cfg, run, allow_collapsed=True, progress=False); m = evaluate_run(run, info=release_info(run))
        per[c] = dict(seconds=time.time() - t0, bank_s=t1 - t0, score_s=time.time() - t1, image_auroc=m['image_auroc'])
        print(f"{c}: {per[c]['seconds']:.1f} s (bank {per[c]['bank_s']:.1f} s)", flush=True)
    return dict(total_s=time.time() - t_all, per_category=per, runs_at_once=1, threads_per_run=torch.get_num_threads())


def markdown(r:dict) -> str:
    hw, a = r['hardware'], r['args']
    rows = [f"| {c} | {r['images'][c][0]} | {r['images'][c][1]} | {v['seconds']:.1f} |" + (f" {v['bank_s']:.1f} |" if 'bank_s' in v else '')
            for c, v in r['per_category'].items()]
    head = '| category | train images | test images | seconds |' + (' of which bank |' if 'bank_s' in next(iter(r['per_category'].values())) else '')
    ok = 'within' if r['total_s'] <= TARGET_S else 'over'
    return '\n'.join([
        f"# Release route benchmark ({a['device']}, {a['mode']})", '',
        f"Machine: {hw['cpu']}, {hw['cpu_count']} cores, torch {hw['torch']}, OMP_NUM_THREADS={hw['omp_num_threads']}; "
        f"1-minute load average {hw['load_average_at_start'][0]:.1f} at start and {r['load_average_at_end'][0]:.1f} at end.", '',
        f"**All {len(r['per_category'])} categories: {r['total_s'] / 60:.1f} min** ({r['total_s']:.0f} s; target 15 min: {ok}).", '',
        f"Encoders: {r['encoders']}. Data: synthetic, {'MVTec AD' if a['scale'] == 1 else str(a['scale']) + ' x MVTec AD'}'s image counts, 256 px. "
        "Exact search; banks built included.", '',
        f"Categories at once: {r['runs_at_once']}, each with {r['threads_per_run']} thread(s)"
        + (" (a category's seconds are its wall time while another category ran beside it)." if r['runs_at_once'] > 1 else "."), '',
        head, '|---|---:|---:|---:|' + ('---:|' if 'bank_s' in head else ''), *rows, ''])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--release', default=None, help='a release folder with all 15 checkpoints (default: the two fixtures stand in)')
    ap.add_argument('--data', default='/tmp/glancesvdd_bench_release/data', help='synthetic data (written once, reused)')
    ap.add_argument('--work', default='/tmp/glancesvdd_bench_release', help='runs and the stand-in release go here (runs emptied first)')
    ap.add_argument('--categories', default='all')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=None, help='OMP_NUM_THREADS / torch threads (default: torch default)')
    ap.add_argument('--mode', default='cli', choices=['cli', 'library'])
    ap.add_argument('--workers', type=int, default=0, help="the command's --workers (0: its default, 2 categories at once on a CPU)")
    ap.add_argument('--scale', type=float, default=1.0, help="image counts times this (1: MVTec AD's; a small value checks the script)")
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'))
    ap.add_argument('--tag', default='', help="suffix of the result files' names, e.g. the machine ('epyc')")
    a = ap.parse_args()
    if a.threads: os.environ['OMP_NUM_THREADS'] = str(a.threads); torch.set_num_threads(a.threads)
    cats = list(MVTEC_SIZES) if a.categories == 'all' else a.categories.split(',')
    work = Path(a.work); data = write_data(Path(a.data), cats, a.scale)
    release = Path(a.release) if a.release else stand_in_release(work/'release', cats)
    runs = work/'runs'; shutil.rmtree(runs, ignore_errors=True)
    r = dict(args=vars(a), hardware=hardware(),
             encoders='the 15 released files' if a.release else 'released bottle (objects) and wood (textures) files standing in for all (--allow-modified)')
    r['images'] = {c: (len(_images(data/c/'train'/'good')), sum(len(_images(f)) for f in (data/c/'test').iterdir())) for c in cats}
    r |= run_cli(release, data, runs, cats, a.device, not a.release, a.workers) if a.mode == 'cli' else \
         run_library(release, data, runs, cats, a.device, not a.release)
    r['load_average_at_end'] = os.getloadavg()
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    name = f"release_{torch.device(a.device).type}{'_' + a.tag if a.tag else ''}"
    save_json(r, out/f'{name}.json'); (out/f'{name}.md').write_text(markdown(r))
    print(markdown(r))


if __name__ == '__main__':
    main()
