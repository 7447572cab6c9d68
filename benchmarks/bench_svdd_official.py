"""The official Patch SVDD code timed on this machine, so that bench_svdd.py's figures have a same-machine baseline.

    git clone https://github.com/nuclearboy95/Anomaly-Detection-PatchSVDD-PyTorch ../patchsvdd-official
    pip install ngt            # the official K=32 search (ngtpy)
    python benchmarks/bench_svdd_official.py --official ../patchsvdd-official --threads 2 --tag epyc

Writes benchmarks/results/svdd_official_cpu[_<tag>].json and .md; when bench_svdd.py's svdd_cpu[_<tag>].json is
there too, the .md sets the two side by side.

The official functions are imported from the checkout and called as its own scripts call them; nothing of them is
copied here. It has no CPU switch: `.cuda()` is made a no-op on tensors, which is the only change (the same as the
CPU edit of research/patchsvdd.md §5).
- Training: main_train.py's step (the four datasets with repeat 100, DataLoader batch 64, shuffle, 2 workers; the
  two position losses, the two SVDD' losses, backward, Adam at lr 1e-4), timed after one warm-up step.
- Inference per test image, as inspection.eval_encoder_NN_multiK does it for a whole test set: `infer` (per-patch
  embedding, batches of 64) at K=64/S=16 and K=32/S=4, `measure_emb_NN` with KDTree (K=64) and NGT (K=32, the index
  built inside the call, once per test set), `distribute_scores`, the product. Total time / number of test images.
- The bank (train embeddings) comes from glancesvdd's dense embedding, which equals the official per-patch one (the
  parity tests); the official per-patch embedding of a 209-image bank alone would take about half an hour here.
Same synthetic images, encoder (the released bottle checkpoint) and bank sizes as bench_svdd.py.
"""
from __future__ import annotations
import argparse, os, statistics, subprocess, sys, time
from pathlib import Path

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # as bench_svdd.py

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_svdd import ROOT, images, hardware, peak_rss_gb, result_name
from glancesvdd.core import load_json, save_json
from glancesvdd.svdd.encoder import load_official_encoder
from glancesvdd.svdd.infer import build_bank
from glancesvdd.svdd.train import mean_image, standardise


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
    try: return 'commit ' + subprocess.run(['git', '-C', str(path), 'rev-parse', 'HEAD'], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError): return f'{path}, not a git checkout'


def nhwc(x:torch.Tensor) -> np.ndarray:
    "Normalised images (N, 3, S, S) as the official NHWC float32 array"
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy().astype(np.float32))


def official_train(off, x:np.ndarray, steps:int, lambda_value:float=1.) -> dict:  # main_train.py's --lambda_value default
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
    return dict(steps=steps, s_per_step=statistics.mean(times), s_per_step_all=times)


def official_infer(off, enc, bank:dict, test:np.ndarray) -> dict:
    _, _, utils, inspection = off
    t = time.perf_counter()
    e64 = inspection.infer(test, enc, K=64, S=16)
    e32 = inspection.infer(test, enc.enc, K=32, S=4)
    t_embed = time.perf_counter() - t
    t1 = time.perf_counter()
    m64 = inspection.measure_emb_NN(e64, bank[64], method='kdt')
    t_kdt = time.perf_counter() - t1
    t1 = time.perf_counter()
    m32 = inspection.measure_emb_NN(e32, bank[32], method='ngt')
    t_ngt = time.perf_counter() - t1
    maps = utils.distribute_scores(m64, (256, 256), K=64, S=16) * utils.distribute_scores(m32, (256, 256), K=32, S=4)
    total, n = time.perf_counter() - t, len(test)
    return dict(test_images=n, bank_k32=len(bank[32]), bank_k64=len(bank[64]), s_per_image=total / n,
                embed_s_per_image=t_embed / n, kdtree_k64_s=t_kdt, ngt_k32_s_incl_index_build=t_ngt,
                image_scores=maps.max(axis=(1, 2)).tolist())


def markdown(r:dict, ours:dict|None) -> str:
    hw, tr = r['hardware'], r['train']
    lines = [f"# The official Patch SVDD code on this machine ({hw['device']})", '',
             f"Machine: {hw['cpu']}, {hw['cpu_count']} cores, torch {hw['torch']} with {hw['torch_threads']} threads; 1-minute "
             f"load average {hw['load_average_at_start'][0]:.1f} at start and {r['load_average_at_end'][0]:.1f} at end. "
             "Run by benchmarks/bench_svdd_official.py on the same synthetic images and released bottle encoder as bench_svdd.py. "
             f"Official code: {r['source']}.", '',
             '| measure | official code | glancesvdd (bench_svdd.py) | speed-up |', '|---|---|---|---|']
    o = ours or {}
    row = lambda what, off, key, fmt: lines.append(
        f"| {what} | {off:{fmt}} | " + (f"{key:{fmt}} | {off / key:.1f}x |" if key else "not run | |"))
    row('training, s per step (64 pairs of each of 4 kinds)', tr['s_per_step'], o.get('train', {}).get('s_per_step'), '.2f')
    for inf in r['infer']:
        mine = next((v['s_per_image'] for k, v in o.items() if k.startswith('infer') and isinstance(v, dict)
                     and v.get('bank_k32') == inf['bank_k32']), None)
        row(f"inference, s per test image ({inf['bank_images']}-image bank; official: NGT K=32, approximate; ours: exact)",
            inf['s_per_image'], mine, '.3f')
    lines += ['', f"Training steps timed: {tr['steps']} after a warm-up ({', '.join(f'{t:.2f}' for t in tr['s_per_step_all'])} s). "
              f"Inference: {r['infer'][0]['test_images']} test images per bank, one call as the official evaluation makes it; "
              "of that, per-patch embedding " + ', '.join(f"{i['embed_s_per_image']:.2f}" for i in r['infer'])
              + " s per image, KDTree K=64 " + ', '.join(f"{i['kdtree_k64_s']:.1f}" for i in r['infer'])
              + " s and NGT K=32 (index build included) " + ', '.join(f"{i['ngt_k32_s_incl_index_build']:.1f}" for i in r['infer'])
              + " s in all, for the banks in the order of the table. NGT builds its index once per evaluation, "
              "so its share per image shrinks with more test images (MVTec AD bottle has 83).",
              f"Peak RSS {r['peak_rss_gb']:.2f} GB."]
    return '\n'.join(lines) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--official', required=True, type=Path, help='a checkout of the official repository')
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--bank-images', type=int, nargs='+', default=[20, 209])
    ap.add_argument('--test-images', type=int, default=10)
    ap.add_argument('--train-steps', type=int, default=3)
    ap.add_argument('--category', default='logo')
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'))
    ap.add_argument('--tag', default='', help="suffix of the result files' names, as bench_svdd.py's")
    a = ap.parse_args()
    off = import_official(a.official.resolve())
    if a.threads: torch.set_num_threads(a.threads)
    dev = torch.device('cpu')
    r = dict(args={k: str(v) for k, v in vars(a).items()}, hardware=hardware(dev), source=checkout_commit(a.official))
    train, test = images(max(a.bank_images), 'train', a.category, 256), images(a.test_images, 'test', a.category, 256)
    r['train'] = official_train(off, nhwc(standardise(train, mean_image(train))), a.train_steps)
    print(f"official training: {r['train']['s_per_step']:.2f} s/step", flush=True)
    ckpt = ROOT/'tests'/'fixtures'/'patchsvdd_official'/'bottle_enchier.pkl'
    mine = load_official_encoder(ckpt)
    enc = off[0].EncoderHier(64, 64); enc.load_state_dict(mine.state_dict()); enc.eval()  # the same weights in the official module
    r['infer'] = []
    for n in a.bank_images:
        bank = build_bank(mine, train[:n])
        inf = official_infer(off, enc, {K: bank[K]['features'].numpy() for K in (64, 32)}, nhwc(standardise(test, bank['mean'])))
        r['infer'].append(dict(bank_images=n, **inf))
        print(f"official inference, {n}-image bank: {inf['s_per_image']:.2f} s/image", flush=True)
    r['peak_rss_gb'], r['load_average_at_end'] = peak_rss_gb(), os.getloadavg()
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    ours_path = out/f"{result_name('svdd', dev.type, a.tag)}.json"
    ours = load_json(ours_path) if ours_path.exists() else None
    name = result_name('svdd_official', dev.type, a.tag)
    save_json(r, out/f'{name}.json')
    (out/f'{name}.md').write_text(markdown(r, ours))
    print(markdown(r, ours))


if __name__ == '__main__':
    main()
