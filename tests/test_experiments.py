"Issue 5 end to end: the experiment notebooks through papermill and the `glancesvdd` command, on synthetic data."
import os, re, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
import torch

from glancesvdd.core import load_json, load_torch
from glancesvdd.data import make_synthetic_mvtec
from glancesvdd.runs import LOCK, _lock_owner

from command import BIN, cli
ROOT = Path(__file__).resolve().parents[1]
UNTRAINED = 'teacher_weights=untrained,imagenet_dir=skip'   # no ImageNet weights or images here: both asked for explicitly


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A working folder with a small synthetic MVTec-layout set (256 px: the Global-Net's input size)"
    d = tmp_path_factory.mktemp('exp')
    make_synthetic_mvtec(d/'data', categories=('brick', 'logo'), n_train=6, n_test_good=2, n_test_defect=1)
    return d

@pytest.fixture(scope='module')
def trained(work):
    "Both methods trained and evaluated on `brick` through the command line (smoke sizes)"
    for m, extra in (('svdd', ()), ('glance', ('--set', UNTRAINED))):
        cli('train', m, 'brick', '--data', 'data', '--runs', 'runs', '--smoke', *extra, cwd=work)
        cli('evaluate', m, 'brick', '--data', 'data', '--runs', 'runs', '--smoke', *extra, cwd=work)
    return work

@pytest.mark.parametrize('method', ['svdd', 'glance'])
def test_cli_train_evaluate_writes_the_run_folder(trained, method):
    run = trained/'runs'/method/'brick'/'seed0'
    for f in ('config.json', 'scores.npz', 'metrics.json', f'train_{method}.ipynb', 'evaluate.ipynb', f'train_{method}.log'):
        assert (run/f).exists(), f
    m = load_json(run/'metrics.json')
    with np.load(run/'scores.npz') as s:   # the metrics are those of the run's own scores, computed apart by scikit-learn
        assert m['image_auroc'] == pytest.approx(roc_auc_score(s['labels'], s['image_scores']), abs=1e-12)
        assert m['pixel_auroc'] == pytest.approx(roc_auc_score(s['masks'].ravel(), s['maps'].ravel()), abs=1e-9)
        assert np.array_equal(s['image_scores'], s['maps'].reshape(len(s['maps']), -1).max(1))   # image score = max of its map
        assert s['labels'].tolist() == [int(d != 'good') for d in s['defects']]
    assert 0 < m['aupro'] < 1 and m['n_images'] == 7 and m['n_anomalous'] == 5
    assert load_json(run/'config.json')['category'] == 'brick'
    if method == 'svdd': assert {'image_auroc_k64', 'image_auroc_k32'} <= set(m)
    log = (run/f'train_{method}.log').read_text()   # the training bar, as text (00_core: GLANCESVDD_PROGRESS=log)
    assert re.search(rf"{'Patch SVDD brick' if method == 'svdd' else 'B global'}: 100%\|#+\|", log), log[-500:]

def test_finished_run_is_not_redone(trained):
    rc, out = cli('batch', '--methods', 'svdd', '--categories', 'brick', '--data', 'data', '--runs', 'runs', '--smoke', cwd=trained)
    assert '| svdd | brick | 0 | skipped |' in out

def test_report_and_the_figure_and_table_notebooks(trained):
    cli('report', '--runs', 'runs', '--out', 'figs', cwd=trained)
    index = (trained/'figs'/'index.md').read_text()
    assert 'brick' in index and 'Table 4' in index
    for nb, params in (('figures', ['-p', 'out', 'figs_nb']), ('tables', ['-p', 'out', 'tables_nb'])):
        subprocess.run([str(BIN/'papermill'), str(ROOT/'nbs'/'experiments'/f'{nb}.ipynb'), f'{nb}.ipynb',
                        '-p', 'runs_root', 'runs', *params], cwd=trained, check=True, capture_output=True, timeout=600)
    assert list((trained/'figs_nb'/'runs').glob('*.png')) and (trained/'tables_nb'/'index.md').exists()

def test_cifar10_notebook(tmp_path):
    from cifar_format import write_cifar
    write_cifar(tmp_path/'cifar', n_train=4, n_test=2)
    subprocess.run([str(BIN/'papermill'), str(ROOT/'nbs'/'experiments'/'cifar10.ipynb'), 'out.ipynb', '-p', 'category', 'cat',
                    '-p', 'data_root', 'cifar', '-p', 'smoke', 'True', '-p', 'cifar_verify', 'False', '-y', 'config: {teacher_weights: untrained, imagenet_dir: skip}'],
                   cwd=tmp_path, check=True, capture_output=True, timeout=600)
    m = load_json(tmp_path/'runs'/'glance_cifar10'/'cat'/'seed0'/'metrics.json')
    assert 0 <= m['image_auroc'] <= 1

def test_batch_isolates_a_failing_run(work):
    "A category whose training image is damaged fails; the other category finishes and keeps its results"
    data = work/'batchdata'
    make_synthetic_mvtec(data, categories=('brick', 'gravel'), n_train=4, n_test_good=1, n_test_defect=1, image_size=128)
    bad = sorted((data/'gravel'/'train'/'good').glob('*.png'))[0]
    bad.write_bytes(bad.read_bytes()[:200])   # truncated: the layout is fine, the image is not
    rc, out = cli('batch', '--methods', 'svdd', '--categories', 'brick,gravel', '--data', data, '--runs', 'bruns', '--smoke',
                  '--set', 'image_size=128', cwd=work, check=False)
    assert rc == 2 and '1 of 2 runs failed' in out, out
    assert '| svdd | brick | 0 | done |' in out and '| svdd | gravel | 0 | failed |' in out
    assert (work/'bruns'/'svdd'/'brick'/'seed0'/'metrics.json').exists()
    assert (work/'bruns'/'svdd'/'gravel'/'seed0'/'train_svdd.ipynb').exists()
    summary = load_json(work/'bruns'/'batch_summary.json')
    assert [r['status'] for r in summary['results']] == ['done', 'failed']

def _papermill_train(work, out, runs, iters, data='rdata'):
    "papermill on train_svdd.ipynb: smoke sizes (a checkpoint every 10 iterations), 128 px, `iters` iterations (config fields go in `config`)"
    return [str(BIN/'papermill'), str(ROOT/'nbs'/'experiments'/'train_svdd.ipynb'), out, '-p', 'category', 'brick',
            '-p', 'data_root', data, '-p', 'runs_root', runs, '-p', 'smoke', 'True', '-y', f'config: {{image_size: 128, iters: {iters}}}']

def test_resume_after_a_killed_run(work):
    "Kill training after its first checkpoint; the rerun resumes and ends with the weights of an uninterrupted run"
    make_synthetic_mvtec(work/'rdata', categories=('brick',), n_train=4, n_test_good=1, n_test_defect=1, image_size=128)
    iters, ckpts = 40, work/'killed'/'svdd'/'brick'/'seed0'/'checkpoints'
    p = subprocess.Popen(_papermill_train(work, 'k.ipynb', 'killed', iters), cwd=work, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not list(ckpts.rglob('iter_*.pt')) and time.time() - t0 < 600 and p.poll() is None: time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    t0 = time.time()   # papermill's kernel has a session of its own: it trains on until it sees papermill gone (about 1 s)
    while _lock_owner(ckpts/LOCK) is not None: assert time.time() - t0 < 120, "the killed run's kernel still trains"; time.sleep(0.1)
    first = sorted(ckpts.rglob('iter_*.pt'))
    assert first and first[-1].name != f'iter_{iters:08d}.pt', "killed too late to test resuming"
    for runs, out in (('killed', 'k2.ipynb'), ('straight', 's.ipynb')):
        subprocess.run(_papermill_train(work, out, runs, iters), cwd=work, check=True, capture_output=True, timeout=900)
    a, b = (load_torch(work/r/'svdd'/'brick'/'seed0'/'model.pt') for r in ('killed', 'straight'))
    ta, tb = (torch.cat([v.float().reshape(-1) for v in _tensors(c)]) for c in (a, b))
    assert len(ta) > 1000
    if not torch.equal(ta, tb):   # where the two runs part, for a failure that may not repeat
        ca, cb = (load_json(work/r/'svdd'/'brick'/'seed0'/'train.json')['curve'] for r in ('killed', 'straight'))
        part = next((x['iter'] for x, y in zip(ca, cb) if x != y), None)
        pytest.fail(f"resumed weights differ from the uninterrupted run's (largest difference {(ta - tb).abs().max():.3g}); "
                    f"their losses first differ at iteration {part}; checkpoints left by the killed run: {[f.name for f in first]}")

def test_second_trainer_on_one_run_is_refused(work):
    "A second trainer on a run's checkpoints while the first trains (papermill has no run-folder lock) is refused by pid; the first finishes"
    make_synthetic_mvtec(work/'ldata', categories=('brick',), n_train=4, n_test_good=1, n_test_defect=1, image_size=128)
    ckpts = work/'twice'/'svdd'/'brick'/'seed0'/'checkpoints'
    args = lambda out: _papermill_train(work, out, 'twice', 400, data='ldata')
    p = subprocess.Popen(args('a.ipynb'), cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while (owner := _lock_owner(ckpts/LOCK)) is None: assert time.time() - t0 < 600 and p.poll() is None, 'the first run did not start'; time.sleep(0.1)
    second = subprocess.run(args('b.ipynb'), cwd=work, capture_output=True, text=True, timeout=900)
    assert p.poll() is None, 'the first run ended before the second one asked: nothing was tested'
    assert second.returncode != 0 and f"checkpoint folder {Path('twice')/'svdd'/'brick'/'seed0'/'checkpoints'} is in use by process {owner['pid']}" in second.stderr, second.stderr[-3000:]
    assert p.wait(900) == 0 and load_json(ckpts.parent/'train.json')['iters'] == 400

def _tensors(obj):
    "All tensors in a (nested) checkpoint, in a fixed order"
    if isinstance(obj, torch.Tensor): return [obj]
    if isinstance(obj, dict): return [t for k in sorted(obj) for t in _tensors(obj[k])]
    if isinstance(obj, (list, tuple)): return [t for v in obj for t in _tensors(v)]
    return []

@pytest.mark.parametrize('args, message', [
    (('train', 'patchcore', 'brick'), "invalid choice: 'patchcore' (choose from 'glance', 'svdd')"),
    (('train', 'svdd', 'cheese'), 'cheese'),
    (('train', 'svdd', 'bottle', '--data', 'nowhere'), 'nowhere'),
    (('batch', '--methods', 'svdd', '--categories', 'brick', '--executor', 'cloud'), "invalid choice: 'cloud'"),
    (('train', 'svdd', 'brick', '--set', 'learning_rate=1'), 'not a field of the svdd config'),
    (('download', 'imagenet'), "invalid choice: 'imagenet'"),
])
def test_bad_input_gives_one_clear_error(work, args, message):
    rc, out = cli(*args, *(('--data', 'data') if args[0] in ('train', 'batch') and '--data' not in args else ()), cwd=work, check=False)
    assert rc == 2 and message in out and 'Traceback' not in out, out

def test_wrong_layout_is_reported(work):
    (work/'flat'/'brick').mkdir(parents=True)
    rc, out = cli('train', 'svdd', 'brick', '--data', 'flat', cwd=work, check=False)
    assert rc == 2 and 'train' in out and 'Traceback' not in out, out

def test_run_folder_from_another_config_is_left_alone(trained):
    run = trained/'runs'/'svdd'/'brick'/'seed0'
    before = {f.name: f.read_bytes() for f in run.iterdir() if f.is_file()}
    rc, out = cli('train', 'svdd', 'brick', '--data', 'data', '--runs', 'runs', '--smoke', '--set', 'lr=0.5', cwd=trained, check=False)
    assert rc == 2 and 'another config' in out and 'lr' in out
    assert before == {f.name: f.read_bytes() for f in run.iterdir() if f.is_file()}

def test_damaged_checkpoint_is_set_aside(work):
    "The newest checkpoint damaged (a full disk): named in a warning, moved aside, and the same command goes on from the one before it"
    make_synthetic_mvtec(work/'cdata', categories=('brick',), n_train=4, n_test_good=1, n_test_defect=1, image_size=128)
    args = ('train', 'svdd', 'brick', '--data', 'cdata', '--runs', 'cruns', '--smoke', '--set', 'image_size=128,iters=4')
    cli(*args, cwd=work)
    run = work/'cruns'/'svdd'/'brick'/'seed0'
    ck = sorted(run.rglob('iter_*.pt'))[-1]
    (run/'model.pt').unlink(missing_ok=True)
    ck.write_bytes(b'garbage')
    rc, out = cli(*args, cwd=work, check=False)
    log = (run/'train_svdd.log').read_text()   # the kernel's warnings, as for a damaged model.pt
    assert rc == 0 and f'{ck.name} is damaged' in log and 'resuming from the checkpoint before it' in log, (out, log)
    assert (run/'model.pt').is_file() and ck.with_name(ck.name + '.damaged').read_bytes() == b'garbage' and ck.is_file()

# Issue 6: the explorer (40_viz) on the runs trained above, through its controls

def _explorer(trained):
    from glancesvdd.viz import explore
    return explore(trained/'runs')

def test_explorer_shows_the_saved_maps_and_numbers(trained):
    from glancesvdd.runs import load_scores
    from glancesvdd.viz import segmentation_stats, SIDE_BY_SIDE
    ex = _explorer(trained); c = ex.controls
    assert list(c['category'].options) == ['brick'] and list(c['method'].options) == ['glance', 'svdd', SIDE_BY_SIDE]
    for method, t in (('glance', 0.7), ('svdd', 0.6)):
        c['method'].value = method
        s = load_scores(trained/'runs'/method/'brick'/'seed0')
        c['defect'].value = 'hole'
        i = int(np.flatnonzero(s['defects'] == 'hole')[0])
        assert ex.current == i and ex.stats['label'] == 1
        before = ex.views['main'].value
        c['threshold'].value = t
        assert ex.views['main'].value != before                                  # redrawn
        thr = s['maps'].min() + t * (s['maps'].max() - s['maps'].min())
        st = ex.stats['runs'][method]
        assert st['threshold'] == pytest.approx(thr, rel=1e-6) and st['image_score'] == pytest.approx(s['image_scores'][i])
        want = segmentation_stats(s['maps'][i], s['masks'][i], thr)
        assert st['iou'] == pytest.approx(want['iou'], nan_ok=True) and st['fpr'] == pytest.approx(want['fpr'])
        assert np.array_equal(ex.figures['main'].axes[1].images[1].get_array().data, s['maps'][i])
        assert ex.figures['scores'].axes[0].lines[-1].get_xdata()[0] == pytest.approx(s['image_scores'][i])
        c['defect'].value = 'all'; c['image'].value = 0
        assert ex.current == 0 and ex.stats['defect'] == str(s['defects'][0])
    c['method'].value = SIDE_BY_SIDE
    assert len(ex.figures['main'].axes) == 5 and sorted(ex.stats['runs']) == ['glance', 'svdd']
    for name, value in (('opacity', 0.9), ('cmap', 'gray_r')):
        before = ex.views['main'].value
        c[name].value = value
        assert ex.views['main'].value != before, name
    assert all(0 < t < 30 for t in ex.draw_seconds.values())   # timed (the figures are in benchmarks/, not asserted here)

def test_explorer_patch_inspector(trained):
    from glancesvdd.runs import load_scores
    from glancesvdd.viz import run_image
    ex = _explorer(trained); c = ex.controls
    g = load_scores(trained/'runs'/'glance'/'brick'/'seed0')
    i = ex.current
    assert (c['row'].max, c['col'].max) == (9, 9)                                 # the smoke run's 10 x 10 grid
    p = ex.stats['patch']
    k = p['row'] * 10 + p['col']
    assert k == int(np.argmax(g['s'][i]))                                        # starts at the most anomalous patch
    assert (p['s_iad'], p['s_dad']) == pytest.approx((g['s_iad'][i, k], g['s_dad'][i, k]))
    y, x = g['corners'][k]
    img = run_image(g['paths'][i], 256)
    assert np.array_equal(ex.figures['patch'].axes[2].images[0].get_array(), img[y:y + 33, x:x + 33])
    c['row'].value = 0; c['col'].value = 1
    assert ex.stats['patch']['score'] == pytest.approx(g['s'][i, 1])
    c['method'].value = 'svdd'
    s = load_scores(trained/'runs'/'svdd'/'brick'/'seed0')
    for K, S, n in ((64, 16, 13), (32, 4, 57)):
        c['scale'].value = K
        assert c['row'].max == n - 1
        c['row'].value, c['col'].value = 2, 3
        p = ex.stats['patch']
        b, r, q = np.unravel_index(s[f'nn_index_k{K}'][i, 2, 3], (len(s['bank_paths']), n, n))
        assert p['distance'] == pytest.approx(s[f'patch_scores_k{K}'][i, 2, 3])
        assert (p['normal_image'], p['normal_row'], p['normal_col']) == (s['bank_paths'][b], r, q)
        normal = run_image(s['bank_paths'][b], 256, 'training image')
        assert np.array_equal(ex.figures['patch'].axes[2].images[0].get_array(), normal[r * S:r * S + K, q * S:q * S + K])

def test_explorer_bad_input(trained, tmp_path):
    import shutil, warnings
    from glancesvdd.core import GlanceSvddError
    from glancesvdd.viz import explore
    with pytest.raises(GlanceSvddError, match='no run with score maps'): explore(tmp_path)
    with pytest.raises(GlanceSvddError, match='is not a folder'): explore(tmp_path/'missing')
    runs = tmp_path/'runs'
    shutil.copytree(trained/'runs', runs)
    (runs/'glance'/'brick'/'seed0'/'scores.npz').write_bytes(b'not a zip')
    with pytest.warns(UserWarning, match='damaged'): ex = explore(runs)
    assert list(ex.controls['method'].options) == ['svdd']                       # the damaged run is skipped, the other shown
