"""Issue 24: the wheel. Built from the checkout's files (what git tracks, and new files it does not ignore) and installed into a
fresh venv, it runs the command from a folder outside the checkout: `--version` and `--help`, then train, evaluate and predict on
a tiny synthetic category, through the experiment notebooks the wheel carries. The venv takes its dependencies from this
environment (a .pth file names the site-packages folders it sees, after the venv's own: installing torch again would take minutes and, offline,
fail); glancesvdd itself comes only from the wheel, and PYTHONPATH is cleared."""
import os, shutil, subprocess, sys, time, zipfile
from pathlib import Path

import pytest

import glancesvdd
from glancesvdd.core import load_json
from glancesvdd.data import make_synthetic_mvtec

ROOT = Path(__file__).resolve().parents[1]

def run(*args, **kw)->subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert r.returncode == 0, r.stdout + r.stderr
    return r

def build_wheel(dest:Path)->Path:
    "The wheel of a copy of the checkout's files (`pip wheel`, this environment's setuptools, no download)"
    src = dest/'src'
    for f in filter(None, run('git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard', cwd=ROOT).stdout.split('\0')):
        if (ROOT/f).is_file(): (src/f).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(ROOT/f, src/f)
    run(sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w', dest/'dist', src)
    wheel, = (dest/'dist').glob('glancesvdd-*.whl')
    return wheel

@pytest.mark.slow
def test_wheel_in_a_fresh_venv(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f'glancesvdd/experiments/{p.name}' for p in (ROOT/'nbs'/'experiments').glob('*.ipynb')} <= names
    assert not [n for n in names if n.startswith(('nbs/', 'tests/', 'benchmarks/'))]
    venv = tmp_path/'venv'
    run(sys.executable, '-m', 'venv', venv)
    site = Path(run(venv/'bin'/'python', '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])').stdout.strip())
    (site/'dependencies.pth').write_text(''.join(f'{p}\n' for p in sys.path if Path(p).name == 'site-packages'))   # this environment's packages
    run(venv/'bin'/'python', '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', wheel)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'} | dict(PATH=f"{venv/'bin'}{os.pathsep}{os.environ['PATH']}")
    work = tmp_path/'work'; work.mkdir()
    cmd = lambda *a: run(venv/'bin'/'glancesvdd', *a, cwd=work, env=env, timeout=900).stdout
    assert cmd('--version').startswith(f"glancesvdd {glancesvdd.__version__} ({site/'glancesvdd'});")   # the wheel's copy
    t0 = time.time(); out = cmd('--help'); seconds = time.time() - t0
    assert 'predict' in out and seconds < 2, seconds
    make_synthetic_mvtec(work/'data', ('brick',), n_train=4, n_test_good=1, n_test_defect=1, image_size=128)
    opts = ('--data', 'data', '--smoke', '--set', 'image_size=128')
    for step in ('train', 'evaluate'): cmd(step, 'svdd', 'brick', *opts)
    run_dir = work/'runs'/'svdd'/'brick'/'seed0'
    for nb in ('train_svdd', 'evaluate'):   # papermill ran the wheel's notebooks, in a kernel that imported the wheel's glancesvdd
        assert load_json(run_dir/f'{nb}.ipynb')['metadata']['papermill']['input_path'] == str(site/'glancesvdd'/'experiments'/f'{nb}.ipynb')
    assert 'image_auroc' in load_json(run_dir/'metrics.json')
    out = cmd('predict', 'svdd', 'brick', 'data/brick/test', *opts)
    assert len(load_json(work/'predictions'/'predictions.json')['images']) == 6 and 'normal training images' in out, out
