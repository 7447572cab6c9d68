"""The GPU lease's own tooling on the CPU: benchmarks/svdd_full_run.py (Patch SVDD's full schedule over several leases:
train until a deadline, hand the checkpoint on, resume it elsewhere, score it) and benchmarks/gpu_run.sh (one lease in one
command), so that a 15-minute lease never finds them broken."""
import json, os, stat, subprocess, sys
from pathlib import Path

import numpy as np
import torch

from glancesvdd.core import load_json
from glancesvdd.data import make_synthetic_mvtec

ROOT = Path(__file__).resolve().parents[1]
FULL_RUN = ROOT/'benchmarks'/'svdd_full_run.py'


def full_run(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS='1', GLANCESVDD_PROGRESS='log')
    r = subprocess.run([sys.executable, str(FULL_RUN), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def test_full_run_hands_on_and_resumes(tmp_path):
    "Two short calls on two runs roots continue one schedule through resume.pt; then the checkpoint is scored and recorded"
    data = make_synthetic_mvtec(tmp_path/'data', ['logo'], n_train=3, n_test_good=2, n_test_defect=1, defects=('stain',))
    (data/'logo'/'train'/'good'/'._000.png').write_bytes(b'\0\5\26\7')   # a Mac's hidden copy: not a training image
    common = ('--data', data, '--category', 'logo', '--device', 'cpu', '--ckpt-every', 1, '--commit', 'test')
    full_run(*common, '--runs', tmp_path/'lease1', '--out', tmp_path/'out1', '--until', 12, cwd=tmp_path)
    p1 = load_json(tmp_path/'out1'/'progress.json')
    assert not p1['finished'] and p1['steps_done'] >= 1 and p1['steps_done'] < p1['schedule_steps']
    assert p1['steps_per_epoch'] == -(-100 * 3 // 64)                    # ceil(100 N / 64) for N = 3 images, the hidden file not one
    first = torch.load(tmp_path/'out1'/'resume.pt', weights_only=False)
    assert first['checkpoint']['iter'] == p1['steps_done']

    (tmp_path/'check.json').write_text(json.dumps({'parts': {'precision.svdd': {'tf32_same_as_fp32': True}}}))   # a later lease's check
    full_run(*common, '--runs', tmp_path/'lease2', '--out', tmp_path/'out2', '--until', 12, '--resume', tmp_path/'out1'/'resume.pt',
             '--precision-from', tmp_path/'check.json', cwd=tmp_path)   # the schedule keeps its precision
    p2 = load_json(tmp_path/'out2'/'progress.json')
    assert p1['config']['precision'] == p2['config']['precision'] == 'fp32'
    assert p2['steps_done'] > p1['steps_done'] and p2['steps_this_call'] == p2['steps_done'] - p1['steps_done']   # went on, not from 0
    second = torch.load(tmp_path/'out2'/'resume.pt', weights_only=False)
    h1, h2 = first['checkpoint']['history'], second['checkpoint']['history']
    assert all(np.array_equal(h2[k][:len(h1[k])], h1[k]) and len(h2[k]) == p2['steps_done'] for k in h1)   # the first lease's losses kept, the second's appended

    out = full_run('--evaluate', '--resume', tmp_path/'out2'/'resume.pt', '--data', data, '--runs', tmp_path/'eval', '--out', tmp_path/'e',
                   '--device', 'cpu', '--record', tmp_path/'record', cwd=tmp_path)
    m = load_json(tmp_path/'record'/'metrics.json')
    assert 0 <= m['image_auroc'] <= 1 and json.loads(out[out.index('{'):])['image_auroc'] == m['image_auroc']
    train = load_json(tmp_path/'record'/'train.json')
    assert train['iters'] == p2['steps_done'] and f"{p2['steps_done']:,} of {p2['schedule_steps']:,} steps" in train['trained_on']


def test_gpu_run_script(tmp_path):
    "gpu_run.sh: the check with its deadline, then the full run for the seconds left, resuming from the given checkpoint"
    bin_, out = tmp_path/'bin', tmp_path/'out'
    bin_.mkdir(); out.mkdir()
    stub = bin_/'python3'   # records each call; the check writes the JSON the full run reads its precision from
    stub.write_text('#!/bin/sh\necho "$@" >> "$CALLS"\n'
                    'case "$1" in *gpu_check.py) echo \'{"parts": {}}\' > "$3/$5.json";; esac\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{bin_}:{os.environ['PATH']}", CALLS=str(tmp_path/'calls'))
    r = subprocess.run(['bash', str(ROOT/'benchmarks'/'gpu_run.sh'), str(out), 'h200', '570', 'abc1234', 'prev/resume.pt'],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    check, run = (tmp_path/'calls').read_text().splitlines()
    assert check.startswith('benchmarks/gpu_check.py --out') and '--deadline 420 --commit abc1234' in check and '--data data/mvtec256' in check
    until = float(run.split('--until ')[1].split()[0])
    assert run.startswith('benchmarks/svdd_full_run.py') and 500 < until <= 540          # 570 s less the check (instant here) and 30 s
    assert f'--precision-from {out}/h200.json' in run and run.endswith('--resume prev/resume.pt')
