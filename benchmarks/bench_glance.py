"""GLANCE speed: inference seconds per 256x256 image (400 Global-Net passes + IDW) and training iterations per second.

    python benchmarks/bench_glance.py --device cpu --threads 2
    python benchmarks/bench_glance.py --device cuda

Writes benchmarks/results/<name>.json and .md (name: glance_<device type> unless --name is given). Weights are random: speed does not depend on them.
Targets (issue): under 1 s per image on 2 CPU cores; under 20 ms per image on a modern GPU.
"""
from __future__ import annotations
import argparse, json, os, platform, time
from pathlib import Path

import numpy as np
import torch

from glancesvdd.core import get_device, save_json
from glancesvdd.patches import glance_corners, patch_centres
from glancesvdd.glance.local_net import LocalNet
from glancesvdd.glance.global_net import GlobalNet
from glancesvdd.glance.dad_head import DADHead
from glancesvdd.glance.config import GlanceConfig, _stains
from glancesvdd.glance.train import StainedPairs, ImagePatches, Prefetcher, load_teacher, local_step, global_step, _adam
from glancesvdd.glance.infer import score_image, fuse_idw, idw_weights


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()


CPU_TIME = {}  # name -> process CPU seconds per call (all threads), beside the wall-clock figures

def timed(f, dev, n:int, name:str|None=None):
    "Wall-clock seconds per call of `f` over `n` calls, after one warm-up call; CPU seconds go to CPU_TIME[name]"
    f(); sync(dev)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n): f()
    sync(dev)
    if name: CPU_TIME[name] = (time.process_time() - c) / n
    return (time.perf_counter() - t) / n


def hardware(dev) -> dict:
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor()) \
        if os.path.exists('/proc/cpuinfo') else platform.processor()
    hw = dict(cpu=cpu, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
              python=platform.python_version(), device=str(dev))
    if dev.type == 'cuda': hw['gpu'] = torch.cuda.get_device_name(dev)
    return hw


@torch.no_grad()
def bench_inference(dev, n_images:int, cfg:GlanceConfig) -> dict:
    torch.manual_seed(0)
    L, G, C = (m.to(dev).eval() for m in (LocalNet(), GlobalNet(), DADHead()))
    corners = glance_corners(cfg.image_size, cfg.patch_size, cfg.grid)
    centres = patch_centres(corners, cfg.patch_size)
    xs = torch.rand(n_images, 3, cfg.image_size, cfg.image_size, device=dev)
    t = time.perf_counter(); idw_weights(centres, (cfg.image_size,) * 2, cfg.idw_p, dev); sync(dev)
    idw_once = time.perf_counter() - t
    it = iter(range(10**9))
    def one(fast):  # the scores of one image, then its map
        s = score_image(L, G, C, xs[next(it) % n_images], corners, cfg.patch_size, cfg.lambda_s, fast, cfg.chunk)['s']
        return fuse_idw(s[None], centres, (cfg.image_size,) * 2, cfg.idw_p)
    fast = timed(lambda: one(True), dev, n_images, 's_per_image')
    plain = timed(lambda: one(False), dev, max(n_images // 4, 1), 's_per_image_plain')
    p = torch.rand(len(corners), 3, cfg.patch_size, cfg.patch_size, device=dev).contiguous(memory_format=torch.channels_last)
    local = timed(lambda: L(p), dev, n_images, 'local_net_400_s')
    s = torch.rand(1, len(corners), device=dev)
    idw = timed(lambda: fuse_idw(s, centres, (cfg.image_size,) * 2, cfg.idw_p), dev, 10)
    return dict(s_per_image=fast, s_per_image_plain=plain, local_net_400_s=local, idw_map_s=idw, idw_weights_once_s=idw_once,
                images=n_images, patches_per_image=len(corners))


def bench_training(dev, batch:int, iters:int, cfg:GlanceConfig) -> dict:
    torch.manual_seed(0)
    images = torch.rand(16, 3, cfg.image_size, cfg.image_size)
    L, G, C = (m.to(dev) for m in (LocalNet(), GlobalNet(), DADHead()))
    L.eval().requires_grad_(False)
    opt_g, opt_c = _adam([G], cfg.lr_global, cfg.betas), _adam([C], cfg.lr_head, cfg.betas)
    pairs = StainedPairs(images, batch, 0, cfg.patch_size, **_stains(cfg))
    fixed = pairs[0]
    out = {}
    for name, batches in [('stage_b_it_per_s', Prefetcher(pairs, 10**9)), ('stage_b_compute_it_per_s', lambda it: fixed)]:
        step = global_step(L, G, C, opt_g, opt_c, batches, cfg.lambda_t, dev)
        out[name] = 1 / timed(lambda: step(0), dev, iters, name)
    out['stains_s_per_batch'] = timed(lambda: pairs[1], torch.device('cpu'), iters)
    teacher = load_teacher('untrained', cfg.teacher_size).to(dev)  # speed only: the weights do not matter
    L.train().requires_grad_(True)
    D = torch.nn.Linear(128, 512).to(dev)
    opt = _adam([L, D], cfg.lr_local, cfg.betas)
    for name, b in [('stage_a_imagenet_it_per_s', cfg.batch_imagenet), ('stage_a_finetune_it_per_s', cfg.batch_finetune)]:
        patches = ImagePatches(images, b, 0, cfg.patch_size)
        step = local_step(L, D, opt, teacher, Prefetcher(patches, 10**9), cfg.lambda_k, cfg.lambda_c, dev)
        out[name] = 1 / timed(lambda: step(0), dev, iters, name)
    return dict(batch_stage_b=batch, batch_stage_a=(cfg.batch_imagenet, cfg.batch_finetune), teacher_size=cfg.teacher_size, **out)


def markdown(r:dict) -> str:
    inf, tr, hw, cpu = r['inference'], r['training'], r['hardware'], r['cpu_seconds_per_call']
    c = lambda k: f" | {cpu[k]:.3f}" if k in cpu else ' | '
    ci = lambda k: f" | {1 / cpu[k]:.3f}" if k in cpu else ' | '  # iterations per CPU-second
    lines = [f"# GLANCE speed on {hw.get('gpu', hw['cpu'])} ({r['device']})", '',
             f"{hw['cpu_count']} CPU cores visible, {hw['torch_threads']} torch threads, torch {hw['torch']}, python {hw['python']}; "
             f"random weights; measured {r['date']}. Load average at start: {r['load_average']}.", '',
             '| what | wall clock | process CPU time (rows in it/s: it per CPU-second) |', '|---|---|---|',
             f"| inference, s per 256×256 image (400 patches, box path + IDW) | {inf['s_per_image']:.3f}{c('s_per_image')} |",
             f"| inference, s per image, plain path (400 masked Global-Net passes) | {inf['s_per_image_plain']:.3f}{c('s_per_image_plain')} |",
             f"| of which Local-Net on the 400 patches, s | {inf['local_net_400_s']:.3f}{c('local_net_400_s')} |",
             f"| IDW map from 400 scores (one matrix product), s | {inf['idw_map_s']:.4f} | |",
             f"| IDW weights, once per geometry, s | {inf['idw_weights_once_s']:.3f} | |",
             f"| Stage B training, it/s at batch {tr['batch_stage_b']} (with stains, one process) | {tr['stage_b_it_per_s']:.3f}{ci('stage_b_it_per_s')} |",
             f"| Stage B training, it/s at batch {tr['batch_stage_b']} (network work only) | {tr['stage_b_compute_it_per_s']:.3f}{ci('stage_b_compute_it_per_s')} |",
             f"| stains for one batch of {tr['batch_stage_b']}, s (CPU) | {tr['stains_s_per_batch']:.3f} | |",
             f"| Stage A ImageNet, it/s at batch {tr['batch_stage_a'][0]} (teacher input {tr['teacher_size']} px) | {tr['stage_a_imagenet_it_per_s']:.3f}{ci('stage_a_imagenet_it_per_s')} |",
             f"| Stage A fine-tune, it/s at batch {tr['batch_stage_a'][1]} | {tr['stage_a_finetune_it_per_s']:.3f}{ci('stage_a_finetune_it_per_s')} |", '',
             "Wall clock is what this run saw on a machine shared with other jobs (see the load average); the CPU-time column "
             "(process CPU seconds, all threads together) is the work itself: with one thread it is the wall time an idle core would give.", '',
             f"Targets: under 1 s per image on 2 CPU cores, under 20 ms per image on a modern GPU. Command: `{r['command']}`.", '']
    return '\n'.join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=None, help='torch threads (CPU)')
    ap.add_argument('--images', type=int, default=8, help='images timed for inference')
    ap.add_argument('--batch', type=int, default=64, help='Stage-B training batch (supp. C.1: 64)')
    ap.add_argument('--iters', type=int, default=3, help='training iterations timed')
    ap.add_argument('--out', default=str(Path(__file__).parent/'results'))
    ap.add_argument('--name', default=None, help='file name of the results, default glance_<device type>')
    args = ap.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    dev, cfg = get_device(args.device), GlanceConfig()
    r = dict(device=dev.type, date=time.strftime('%Y-%m-%d %H:%M'), load_average=[round(v, 2) for v in os.getloadavg()],
             command='python benchmarks/bench_glance.py ' + ' '.join(f'--{k} {v}' for k, v in vars(args).items() if v is not None and k not in ('out', 'name')),
             hardware=hardware(dev))
    r['inference'] = bench_inference(dev, args.images, cfg)
    r['training'] = bench_training(dev, args.batch, args.iters, cfg)
    r['cpu_seconds_per_call'] = CPU_TIME
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    name = args.name or f'glance_{dev.type}'
    save_json(r, out/f'{name}.json')
    (out/f'{name}.md').write_text(markdown(r))
    print(markdown(r))


if __name__ == '__main__': main()
