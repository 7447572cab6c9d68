"""Explorer responsiveness: seconds from a control change to the redrawn pictures, on saved runs.

    python benchmarks/bench_explorer.py --runs runs/demo     # after `make demo` (256x256 synthetic images)

Writes benchmarks/results/explorer_cpu.json and .md. Each control is moved `--repeats` times per method view
(GLANCE, Patch SVDD, side by side); the wall time of the change (the handler redraws synchronously) is reported
as median and maximum. The issue's target: well under a second for a 256x256 image.
"""
from __future__ import annotations
import argparse, os, platform, statistics, time
from pathlib import Path

os.environ.setdefault('MPLBACKEND', 'Agg')
import numpy as np

from glancesvdd.core import save_json
from glancesvdd.viz import explore, SIDE_BY_SIDE

ROOT = Path(__file__).resolve().parents[1]


def moves(c, k:int) -> dict:
    "For each control, the k values it is set to in turn (each different from the one before)"
    n_img = c['image'].max + 1
    return dict(image=[(i + 1) % n_img for i in range(k)], threshold=[0.3 + 0.1 * (i % 5) for i in range(k)],
                opacity=[0.4 + 0.1 * (i % 4) for i in range(k)], cmap=[('viridis', 'jet')[i % 2] for i in range(k)],
                row=[(i + 1) % (c['row'].max + 1) for i in range(k)], col=[(i + 1) % (c['col'].max + 1) for i in range(k)])


def main(runs:str, repeats:int):
    t = time.perf_counter(); ex = explore(runs); build = time.perf_counter() - t
    c, out = ex.controls, {}
    size = int(ex._data(ex.shown[0])['maps'].shape[-1])
    for method in c['method'].options:
        c['method'].value = method
        for name, values in moves(c, repeats).items():
            times = []
            for v in values:
                t = time.perf_counter(); c[name].value = v; times.append(time.perf_counter() - t)
            out[f'{method} / {name}'] = dict(median_s=statistics.median(times), max_s=max(times))
    hw = dict(cpu=next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor()),
              cpu_count=os.cpu_count(), python=platform.python_version(), load_average_at_start=os.getloadavg())
    res = dict(runs=str(runs), n_runs=len(ex.runs), image_size=size, repeats=repeats, build_s=build, hardware=hw, changes=out)
    dest = ROOT/'benchmarks'/'results'
    save_json(res, dest/'explorer_cpu.json')
    lines = [f'# Explorer redraw times ({size}x{size} images, {len(ex.runs)} runs in {runs})', '',
             f"CPU: {hw['cpu']}, {hw['cpu_count']} cores, load average at start {tuple(round(x, 2) for x in hw['load_average_at_start'])}.",
             f'Building the explorer: {build:.2f} s. Each control moved {repeats} times per view; wall seconds of the change.', '',
             '| view / control | median s | max s |', '|---|---|---|']
    lines += [f"| {k} | {v['median_s']:.3f} | {v['max_s']:.3f} |" for k, v in out.items()]
    (dest/'explorer_cpu.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--runs', default='runs/demo'); p.add_argument('--repeats', type=int, default=5)
    a = p.parse_args(); main(a.runs, a.repeats)
