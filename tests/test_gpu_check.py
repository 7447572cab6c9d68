"""benchmarks/gpu_check.py (issue 14): its CPU mode runs here, without the packages the GPU machine lacks, so it never rots;
each correctness item is also a `gpu` test, skipped without CUDA."""
import importlib.util, json, os, subprocess, sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')   # deterministic cuBLAS for the resume check, before any CUDA work
# Installed here but not on the GPU machine (device README, KINDS.md): the method modules must import without them
ABSENT = ('papermill', 'nbdev', 'ipywidgets', 'fastcore', 'nbformat', 'nbclient', 'nbconvert', 'execnb', 'submitit')
BLOCK = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {ABSENT!r}: raise ModuleNotFoundError(f'No module named {{name!r}} (blocked: absent on the GPU machine)', name=name)
sys.meta_path.insert(0, Block())
"""
METHOD_MODULES = ('core', 'data', 'patches', 'stains', 'runs', 'metrics', 'glance.local_net', 'glance.global_net', 'glance.dad_head',
                  'glance.config', 'glance.model', 'glance.train', 'glance.infer', 'svdd.config', 'svdd.model', 'svdd.train', 'svdd.infer', 'batch')


def _load():
    spec = importlib.util.spec_from_file_location('gpu_check', ROOT/'benchmarks'/'gpu_check.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def _run(code, timeout):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-c', BLOCK + code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_method_modules_import_without_notebook_tools():
    "What the GPU machine lacks (papermill, nbdev, ipywidgets, ...) is needed by no method module"
    r = _run(f"import importlib\nfor m in {METHOD_MODULES!r}: importlib.import_module('glancesvdd.' + m)\nprint('imported')\n"
             "try: import papermill\nexcept ModuleNotFoundError as e: print(e)", 300)
    assert r.returncode == 0 and 'imported' in r.stdout, r.stderr[-3000:]
    assert "No module named 'papermill' (blocked" in r.stdout   # the blocker works


def test_quick_cpu_run(tmp_path):
    "`--device cpu --quick` runs every part, writes the JSON and the Markdown, and every correctness check passes"
    r = _run(f"import runpy; sys.argv = ['gpu_check.py', '--device', 'cpu', '--quick', '--out', {str(tmp_path)!r}]\n"
             "runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')", 600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path/'gpu_check.json').read_text())
    bad = {k: v.get('error') for k, v in res['parts'].items() if v['status'] != 'pass'}
    assert not bad, bad
    assert {'correctness.svdd_parity', 'correctness.resume', 'throughput.svdd_infer', 'loop.svdd', 'loop.glance', 'precision.svdd',
            'profile.svdd'} <= set(res['parts'])
    assert res['parts']['env.batch_devices']['how'] == 'glancesvdd.batch._devices'   # batch's own rule, imported without papermill
    assert set(res['projection']) >= {'svdd_h', 'glance_h', 'gpu_seconds'}
    assert set(res['parts']['throughput.svdd_train']['precisions']) == {'fp32', 'tf32', 'bf16', 'tf32_cudnn_benchmark'}
    assert set(res['parts']['precision.svdd']['precisions']) == {'fp32', 'tf32', 'bf16'}
    assert set(res['projection']['gpu_seconds']) == {'svdd', 'glance_imagenet', 'glance_finetune', 'glance_global'}
    infer = res['parts']['throughput.svdd_infer']   # where an image's time goes: embedding and each scale's search
    assert all(infer[k] > 0 for k in ('embed_ms_per_image', 'k64_search_ms_per_image', 'k32_search_ms_per_image')), infer
    md = (tmp_path/'gpu_check.md').read_text()
    assert '| correctness.svdd_embedding | pass |' in md and 'Time per category' in md and 'Training precision' in md
    assert '[' in r.stdout and 'correctness.smoke: pass' in r.stdout   # printed as it went


def test_part_budget_stops_a_part(tmp_path):
    "A part that outruns its budget is recorded as 'timeout', and the run goes on"
    gc = _load()
    r = dict(args=dict(quick=True, name='t'), command='', started='', hardware=gc.hardware(torch.device('cpu')), parts={},
             clock=lambda: 0.0)
    def spin():
        while True: pass
    gc.run_part(r, 'slow', 0.2, spin, tmp_path, deadline=gc.time.perf_counter() + 60)
    gc.run_part(r, 'late', 5, lambda: dict(ok=True), tmp_path, deadline=gc.time.perf_counter())
    assert r['parts']['slow']['status'] == 'timeout' and r['parts']['late']['status'] == 'skipped'
    assert json.loads((tmp_path/'t.json').read_text())['parts']['slow']['status'] == 'timeout'


# ------------------------------------------------------------------ the same checks on CUDA (run by the script too)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
CHECK_NAMES = ('svdd_embedding', 'svdd_parity', 'svdd_search', 'glance_leakage', 'glance_fast_path', 'resume', 'smoke')


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize('name', CHECK_NAMES)
def test_cuda(name, tmp_path):
    gc = _load()
    f, dev = gc.CHECKS[name], torch.device('cuda')
    res = f(dev, False, tmp_path) if name in ('resume', 'smoke') else f(dev, False)
    assert res.pop('ok'), res


@pytest.mark.gpu
@CUDA
def test_cuda_batch_devices():
    res = _load().batch_devices()
    assert res['ok'] and res['devices'] == [f'cuda:{i}' for i in range(torch.cuda.device_count())], res
