"""Issue 16, faults and bad input: each fault injected through the `glancesvdd` command on tiny synthetic data, and
three things asserted: the exit code, one clear message (no traceback on stderr), and that nothing was lost (md5 of
the run folders' models, checkpoints, scores and metrics before and after)."""
import hashlib, json, os, shutil, signal, subprocess, sys, tarfile, time, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glancesvdd.core import load_json, load_torch
from glancesvdd.data import make_synthetic_mvtec, load_split

from command import BIN, run_command, as_in_a_terminal
SMALL = 'image_size=128'            # Patch SVDD at 128 px: small and quick on a CPU
ITERS = f'{SMALL},iters=40'         # smoke sizes, 40 iterations (checkpoints every 10): room to kill a run in the middle
RUN = ('--data', 'data', '--smoke')

# One thread for the runs these tests start (their kernels inherit it): a resumed run must reproduce the uninterrupted
# one bit for bit, and with two threads the BLAS may split a product differently from one run to the next on a busy
# machine (seen once: weights 1e-4 apart after 30 Adam steps, which turn float rounding into whole steps).
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}

def cli(*args, cwd, timeout=900):
    "Run the installed `glancesvdd` command: (exit code, stdout, stderr)"
    r = run_command(*args, cwd=cwd, timeout=timeout, env=ENV)
    return r.returncode, r.stdout, r.stderr

def clear_error(res, *words, code=2):
    "The exit code, exactly one `glancesvdd: error:` message that holds `words`, and no traceback"
    rc, out, err = res
    assert rc == code, (rc, out, err)
    assert 'Traceback' not in err + out, err
    assert sum(l.startswith('glancesvdd: error:') for l in err.splitlines()) == 1, err
    for w in words: assert w in err, (w, err)
    return err

def ok(res):
    rc, out, err = res
    assert rc == 0 and 'Traceback' not in err + out, (rc, out, err)
    return out

def md5s(root)->dict:
    "md5 of every model, checkpoint, score and metrics file under `root` (the batch summary aside)"
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob('*'))
            if p.is_file() and p.suffix in ('.pt', '.json', '.npz') and p.name != 'batch_summary.json'}

def weights(f):
    ck = load_torch(f)
    return torch.cat([v.float().reshape(-1) for k in sorted(ck['encoder']) for v in [ck['encoder'][k]]])

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "One synthetic data set for every case: brick and logo at 128 px, and a category without test/"
    d = tmp_path_factory.mktemp('faults')
    make_synthetic_mvtec(d/'data', categories=('brick', 'logo'), n_train=4, n_test_good=1, n_test_defect=1, image_size=128)
    shutil.copytree(d/'data'/'brick'/'train', d/'data'/'gravel'/'train')    # gravel: train/ only, no test/
    return d

@pytest.fixture(scope='module')
def trained(work):
    "Patch SVDD trained and evaluated on brick (smoke sizes, 40 iterations); returns its run folder"
    for step in ('train', 'evaluate'): ok(cli(step, 'svdd', 'brick', *RUN, '--runs', 'runs', '--set', ITERS, cwd=work))
    return work/'runs'/'svdd'/'brick'/'seed0'

def kernel_of(pid:int):
    "The pid of the ipykernel that process `pid` started, or None"
    for d in Path('/proc').iterdir():
        if not d.name.isdigit(): continue
        try:
            ppid = int((d/'stat').read_text().rsplit(')', 1)[1].split()[1])
            if ppid == pid and b'ipykernel_launcher' in (d/'cmdline').read_bytes(): return int(d.name)
        except (OSError, IndexError, ValueError): pass
    return None

def wait_for(cond, p, timeout=600):
    t0 = time.time()
    while not cond():
        assert p.poll() is None, p.communicate()
        assert time.time() - t0 < timeout, 'timed out'
        time.sleep(0.05)

# Bad 1: a kernel killed in the middle of a two-category batch (what the OOM killer does)

def test_kernel_killed_in_a_batch(trained, work):
    "The other category completes, the failure names its notebook and log, a rerun resumes to the uninterrupted weights"
    args = ('batch', '--methods', 'svdd', '--categories', 'brick,logo', *RUN, '--runs', 'kruns', '--set', ITERS)
    p = subprocess.Popen([str(BIN/'glancesvdd'), *args], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    brick = work/'kruns'/'svdd'/'brick'/'seed0'
    wait_for(lambda: list((brick/'checkpoints').glob('iter_*.pt')), p)
    kernel = kernel_of(p.pid)
    os.kill(kernel, signal.SIGKILL)
    out, err = p.communicate(timeout=900)
    clear_error((p.returncode, out, err), '1 of 2 runs failed')
    assert '| svdd | brick | 0 | failed |' in out and 'kernel running train_svdd died' in out, out
    assert '| svdd | logo | 0 | done |' in out, out
    summary = load_json(work/'kruns'/'batch_summary.json')
    assert [r['status'] for r in summary['results']] == ['failed', 'done']
    assert (work/summary['results'][0]['log']).exists() and (work/summary['results'][0]['notebook']).exists()
    assert not (brick/'checkpoints'/'iter_00000040.pt').exists(), 'killed too late to test resuming'
    logo = md5s(work/'kruns'/'svdd'/'logo')
    out = ok(cli(*args, cwd=work))                                            # the rerun resumes brick, skips logo
    assert '| svdd | brick | 0 | done |' in out and '| svdd | logo | 0 | skipped |' in out, out
    assert md5s(work/'kruns'/'svdd'/'logo') == logo
    assert (brick/'train_svdd.failed-1.log').exists() and (brick/'train_svdd.failed-1.ipynb').exists()   # the failure's record
    assert load_json(brick/'train.json')['iters'] == 40                     # --set wins over --smoke (smoke alone: 20)
    assert torch.equal(weights(brick/'model.pt'), weights(trained/'model.pt'))   # the uninterrupted run's weights

def test_kernel_killed_in_train(work):
    p = subprocess.Popen([str(BIN/'glancesvdd'), 'train', 'svdd', 'logo', *RUN, '--runs', 'truns', '--set', f'{SMALL},iters=400'],
                         cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(lambda: kernel_of(p.pid), p)
    time.sleep(1); os.kill(kernel_of(p.pid), signal.SIGKILL)
    out, err = p.communicate(timeout=600)
    clear_error((p.returncode, out, err), 'kernel running train_svdd died', 'run the same command again', 'train_svdd.log')   # at start-up or later

def test_ctrl_c_shows_one_line(work):
    p = subprocess.Popen([str(BIN/'glancesvdd'), 'train', 'svdd', 'logo', *RUN, '--runs', 'cruns', '--set', f'{SMALL},iters=400'],
                         cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, preexec_fn=as_in_a_terminal)
    run = work/'cruns'/'svdd'/'logo'/'seed0'
    wait_for(lambda: kernel_of(p.pid), p)
    time.sleep(3); p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 130 and err.strip().splitlines() == [
        'glancesvdd: interrupted; finished runs are kept, run the same command again to continue'], err

def test_sigterm_is_treated_as_ctrl_c(work):
    "SIGTERM (kill, a scheduler) during train: one line, exit code 143, the kernel stopped, the run folder's lock released"
    p = subprocess.Popen([str(BIN/'glancesvdd'), 'train', 'svdd', 'logo', *RUN, '--runs', 'sruns', '--set', f'{SMALL},iters=400'],
                         cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    run = work/'sruns'/'svdd'/'logo'/'seed0'
    wait_for(lambda: list((run/'checkpoints').glob('iter_*.pt')), p)    # training under way, in its kernel
    kernel = kernel_of(p.pid); assert kernel
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 143 and err.strip().splitlines() == [
        'glancesvdd: terminated (SIGTERM); finished runs are kept, run the same command again to continue'], (p.returncode, err)
    assert not (run/'.lock').exists()
    gone = lambda: not Path(f'/proc/{kernel}').exists() or 'zombie' in Path(f'/proc/{kernel}/status').read_text().lower()
    t0 = time.time()
    while not gone(): assert time.time() - t0 < 300, f'kernel {kernel} still runs'; time.sleep(0.1)

# Bad 2: a damaged scores.npz; Weak: a missing runs folder

def test_report_skips_damaged_scores(trained, work):
    for cat, damage in (('brick', 'cut'), ('logo', 'flip')):
        run = work/'rruns'/'svdd'/cat/'seed0'
        shutil.copytree(trained, run)
        b = bytearray((run/'scores.npz').read_bytes())
        if damage == 'cut': b = b[:2000]
        else: b[len(b) // 3] ^= 0xFF                                           # one byte flipped: Bad CRC-32
        (run/'scores.npz').write_bytes(bytes(b))
    before = md5s(work/'rruns')
    rc, out, err = cli('report', '--runs', 'rruns', '--out', 'rep', cwd=work)
    assert rc == 0 and 'Traceback' not in err, err
    for cat in ('brick', 'logo'): assert f'svdd/{cat}/seed0/scores.npz is damaged' in err and 'evaluate the run again' in err, err
    assert (work/'rep'/'index.md').exists() and md5s(work/'rruns') == before

def test_report_of_a_missing_runs_folder(work):
    clear_error(cli('report', '--runs', 'rnus', '--out', 'rep2', cwd=work), 'runs folder rnus does not exist')

# Bad 3 and 4, Weak `--set`: every config field checked by its type and limits, before a kernel starts, never stored

@pytest.mark.parametrize('method, values, words', [
    ('svdd', 'image_size=abc', ["SvddConfig.image_size: expected an integer, given 'abc'"]),
    ('svdd', 'iters=abc', ["SvddConfig.iters: expected an integer or None, given 'abc'"]),
    ('svdd', 'iters=0', ['SvddConfig.iters: expected >= 1, given 0']),
    ('svdd', 'batch_size=0', ['SvddConfig.batch_size: expected >= 1, given 0']),   # was a ZeroDivisionError
    ('svdd', 'hierarchical=maybe', ["SvddConfig.hierarchical: expected True or False, given 'maybe'"]),
    ('glance', 'image_size=128', ['GlanceConfig.image_size: expected 256, given 128', 'Tab. 2']),
    ('glance', 'betas=(0.5,0.9),lr_global=-1', ['GlanceConfig.lr_global: expected > 0, given -1']),   # the tuple is read whole
])
def test_bad_config_values_are_refused(trained, work, method, values, words):
    before = md5s(work/'runs')
    clear_error(cli('train', method, 'brick', *RUN, '--runs', 'runs', '--set', values, cwd=work), *words)
    if values == 'image_size=abc':   # batch: refused the same way, before any run starts
        clear_error(cli('batch', '--methods', method, '--categories', 'brick,logo', *RUN, '--runs', 'runs', '--set', values, cwd=work), *words)
    assert md5s(work/'runs') == before and not (work/'runs'/'glance').exists()

@pytest.mark.parametrize('device', ['tpu', 'gpu'])
def test_bad_device_is_refused_before_a_kernel_starts(work, device):
    clear_error(cli('train', 'svdd', 'brick', *RUN, '--runs', 'druns', '--device', device, cwd=work),
                f"device '{device}': expected auto, cpu, cuda or cuda:N")
    assert not (work/'druns').exists()

# Bad 5 and Weak download: a file as --root; a per-category archive with --sha256 none, recorded

def test_download_to_a_file_root(work):
    (work/'afile').write_text('x')
    clear_error(cli('download', 'mvtec', '--root', 'afile', cwd=work), 'afile is a file, not a folder')

def test_per_category_archive(work):
    d = work/'pack'; make_synthetic_mvtec(d, categories=('brick',), n_train=2, n_test_good=1, n_test_defect=1, image_size=64)
    (d/'brick').rename(d/'bottle')
    with tarfile.open(work/'bottle.tar.xz', 'w:xz') as t: t.add(d/'bottle', 'bottle')
    clear_error(cli('download', 'mvtec', '--root', 'mv', '--archive', 'bottle.tar.xz', '--categories', 'bottle', cwd=work),
                'differs from the expected', 'per-category archive')
    ok(cli('download', 'mvtec', '--root', 'mv', '--archive', 'bottle.tar.xz', '--categories', 'bottle', '--sha256', 'none', cwd=work))
    assert (work/'mv'/'mvtec_ad'/'bottle'/'test').is_dir()
    assert load_json(work/'mv'/'mvtec_ad_download.json')[-1]['sha256'] == 'none (not checked)'

# Weak: one bad category does not stop the batch

def test_bad_categories_fail_alone(trained, work):
    run = work/'bruns'/'svdd'/'brick'/'seed0'; shutil.copytree(trained, run)
    (run/'metrics.json').write_text('{"image_auroc": 0.')                     # damaged
    logo = work/'bruns'/'svdd'/'logo'/'seed0'; shutil.copytree(trained, logo)
    (logo/'config.json').write_text(json.dumps(load_json(logo/'config.json') | dict(category='logo')))   # a logo run (of brick's model: never read here)
    (logo/'metrics.json').write_text('[0.9, 0.8]')                           # valid JSON, not the metrics by name
    before = md5s(work/'bruns')
    res = cli('batch', '--methods', 'svdd', '--categories', 'brick,gravel,logo', *RUN, '--runs', 'bruns', '--set', ITERS, cwd=work)
    clear_error(res, '3 of 3 runs failed')
    assert '| svdd | brick | 0 | failed |' in res[1] and '| svdd | gravel | 0 | failed |' in res[1], res[1]
    results = load_json(work/'bruns'/'batch_summary.json')['results']
    assert [r['status'] for r in results] == ['failed', 'failed', 'failed']
    assert 'metrics.json is not valid JSON' in results[0]['error'] and 'the trained model is kept' in results[0]['error']
    assert 'gravel/test does not exist' in results[1]['error']
    assert 'logo/seed0/metrics.json holds a JSON list, not the metrics by name' in results[2]['error']
    after = md5s(work/'bruns')
    for m in ('brick', 'logo'): after.pop(f'svdd/{m}/seed0/metrics.json', None); before.pop(f'svdd/{m}/seed0/metrics.json', None)
    assert after == before and not (work/'bruns'/'svdd'/'gravel').exists()

# Weak: two processes in one run folder; a stale lock

def test_second_process_in_a_run_folder_is_refused(trained, work):
    holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
    try:
        (trained/'.lock').write_text(json.dumps(dict(pid=holder.pid, host=os.uname().nodename, since='now')))
        before = md5s(trained)
        clear_error(cli('train', 'svdd', 'brick', *RUN, '--runs', 'runs', '--set', ITERS, cwd=work),
                    f'is in use by process {holder.pid}', 'wait for it')
        assert md5s(trained) == before
    finally: holder.kill(); (trained/'.lock').unlink(missing_ok=True)

# Weak: the same data under another spelling; an empty model.pt (and a stale lock taken over on the way)

def test_same_data_other_spelling(trained, work):
    before = md5s(trained)
    ok(cli('train', 'svdd', 'brick', '--data', './data/', '--smoke', '--runs', 'runs', '--set', ITERS, cwd=work))   # absolute: 04_runs
    assert md5s(trained) == before
    err = clear_error(cli('train', 'svdd', 'brick', *RUN, '--runs', 'runs', '--set', f'{ITERS},lr=0.5', cwd=work), 'another config')
    assert 'it holds a trained model (model.pt): to evaluate it' in err and '--force' not in err   # no advice that deletes it

def test_batch_refuses_a_finished_run_of_another_config(trained, work):
    "batch refuses a finished run made with another config as train does, instead of skipping it with its old metrics"
    before = md5s(trained)
    res = cli('batch', '--methods', 'svdd', '--categories', 'brick', *RUN, '--runs', 'runs', '--set', f'{ITERS},lr=0.5', cwd=work)
    clear_error(res, '1 of 1 runs failed')
    assert '| svdd | brick | 0 | failed |' in res[1] and 'another config (lr: 0.0001 -> 0.5)' in res[1], res[1]
    assert md5s(trained) == before

def test_batch_force_keeps_an_unfinished_run(work):
    "--force redoes finished runs; a trained run not yet evaluated keeps its model and goes on to its evaluation"
    ok(cli('train', 'svdd', 'logo', *RUN, '--runs', 'uruns', '--set', ITERS, cwd=work))
    run = work/'uruns'/'svdd'/'logo'/'seed0'
    model = md5s(run)['model.pt']
    out = ok(cli('batch', '--methods', 'svdd', '--categories', 'logo', *RUN, '--runs', 'uruns', '--set', ITERS, '--force', cwd=work))
    assert '| svdd | logo | 0 | done |' in out and md5s(run)['model.pt'] == model and (run/'metrics.json').exists(), out
    trained_at = (run/'train.json').stat().st_mtime_ns
    ok(cli('batch', '--methods', 'svdd', '--categories', 'logo', *RUN, '--runs', 'uruns', '--set', ITERS, '--force', cwd=work))
    assert (run/'train.json').stat().st_mtime_ns != trained_at                # finished now: redone, trained again

def test_empty_model_is_trained_again(trained, work):
    run = work/'zruns'/'svdd'/'brick'/'seed0'; shutil.copytree(trained, run)
    (run/'model.pt').write_bytes(b'')
    dead = subprocess.Popen([sys.executable, '-c', 'pass']); dead.wait()
    (run/'.lock').write_text(json.dumps(dict(pid=dead.pid, host=os.uname().nodename, since='then')))   # stale
    ckpts = {k: v for k, v in md5s(run).items() if k.startswith('checkpoints')}
    ok(cli('train', 'svdd', 'brick', *RUN, '--runs', 'zruns', '--set', ITERS, cwd=work))
    assert torch.equal(weights(run/'model.pt'), weights(trained/'model.pt')) and (run/'model.pt.damaged').exists()
    assert {k: v for k, v in md5s(run).items() if k.startswith('checkpoints')} == ckpts and not (run/'.lock').exists()

# Issue 24: evaluate --run reads the run's own config.json

def test_evaluate_a_run_folder(trained, work):
    "No --set, --data or --smoke repeated: the run's config.json gives them; the metrics are the run's own, its model untouched"
    run = work/'vruns'/'svdd'/'brick'/'seed0'; shutil.copytree(trained, run)
    for f in ('metrics.json', 'scores.npz'): (run/f).unlink()
    model = md5s(run)['model.pt']
    ok(cli('evaluate', '--run', 'vruns/svdd/brick/seed0', '--device', 'cpu', cwd=work))
    new, old = load_json(run/'metrics.json'), load_json(trained/'metrics.json')
    assert [new[k] for k in ('image_auroc', 'pixel_auroc', 'aupro')] == [old[k] for k in ('image_auroc', 'pixel_auroc', 'aupro')]
    assert md5s(run)['model.pt'] == model and load_json(run/'config.json') == load_json(trained/'config.json')

def test_evaluate_a_run_folder_from_another_folder(trained, work):
    "The run's relative data_root names other data from another folder: refused, saying where to run from, not scored on that data"
    run = work/'wruns'/'svdd'/'brick'/'seed0'; shutil.copytree(trained, run)
    (work/'elsewhere').mkdir(exist_ok=True); shutil.copytree(work/'data', work/'elsewhere'/'data', dirs_exist_ok=True)   # a data/ there too
    before = md5s(run)
    clear_error(cli('evaluate', '--run', str(run), '--device', 'cpu', cwd=work/'elsewhere'),
                f"its scores list images under {work/'data'}, but from here 'data' is {work/'elsewhere'/'data'}", f'Run the command from {work}')
    assert md5s(run) == before

def test_hand_edited_config_is_named_invalid(trained, work):
    "A value no command could give, written into config.json by hand: the file itself is named as invalid, and nothing changes"
    run = work/'hruns'/'svdd'/'brick'/'seed0'; shutil.copytree(trained, run)
    (run/'metrics.json').unlink()                                            # not finished: batch would evaluate it
    cfg = load_json(run/'config.json'); (run/'config.json').write_text(json.dumps(cfg | dict(lr=-1)))
    before = md5s(run)
    msg = ('hruns/svdd/brick/seed0/config.json is invalid (SvddConfig.lr: expected > 0, given -1)', 'edited by hand', 'train_svdd.ipynb')
    for args in (('evaluate', 'svdd', 'brick', *RUN, '--runs', 'hruns', '--set', ITERS), ('evaluate', '--run', 'hruns/svdd/brick/seed0'),
                 ('train', 'svdd', 'brick', *RUN, '--runs', 'hruns', '--set', ITERS), ('batch', '--methods', 'svdd', '--categories', 'brick', *RUN,
                 '--runs', 'hruns', '--set', ITERS)):
        err = clear_error(cli(*args, cwd=work), *(('1 of 1 runs failed',) if args[0] == 'batch' else msg))
        if args[0] == 'batch': assert all(m in load_json(work/'hruns'/'batch_summary.json')['results'][0]['error'] for m in msg)
        assert md5s(run) == before, args

# Weak: evaluate before train

def test_evaluate_before_train_creates_nothing(work):
    clear_error(cli('evaluate', 'svdd', 'logo', *RUN, '--runs', 'eruns', '--set', SMALL, cwd=work),
                'no trained model at eruns/svdd/logo/seed0/model.pt', 'glancesvdd train svdd logo')
    assert not (work/'eruns').exists()

# Weak: masks stored as 0/1

def test_masks_stored_as_0_1_are_named(work):
    "Masks stored as 0/1, all or only some of them: refused with the mask named, before any training, not scored as empty"
    shutil.copytree(work/'data'/'brick', work/'mdata'/'brick')
    for m in sorted((work/'mdata'/'brick'/'ground_truth').rglob('*.png'))[:2]:   # some of them, from another annotation tool
        Image.fromarray((np.asarray(Image.open(m)) > 0).astype(np.uint8)).save(m)
    with pytest.raises(Exception, match=r'grey levels 0\.\.1, and only values > 128 count as defect.*a 0/1 mask: multiply by 255'):
        load_split(work/'mdata', 'brick', 'test', 128, progress=False)
    res = cli('batch', '--methods', 'svdd', '--categories', 'brick', '--data', 'mdata', '--smoke', '--runs', 'mruns', '--set', ITERS, cwd=work)
    clear_error(res, '1 of 1 runs failed')
    assert '| failed |' in res[1] and 'grey levels 0..1' in res[1] and not (work/'mruns'/'svdd'/'brick'/'seed0'/'model.pt').exists(), res

def test_alpha_masks_and_a_Good_folder(work):
    "Masks drawn on a transparent layer (white everywhere, the defect in alpha) read as drawn; a test/Good folder is refused by name"
    shutil.copytree(work/'data'/'brick', work/'adata'/'brick')
    for m in sorted((work/'adata'/'brick'/'ground_truth').rglob('*.png')):
        a = np.asarray(Image.open(m)); Image.fromarray(np.dstack([np.full((*a.shape, 3), 255, np.uint8), a])).save(m)
    got, want = (load_split(work/r, 'brick', 'test', 128, progress=False)['masks'] for r in ('adata', 'data'))
    assert 0 < want.sum() < want.numel() and torch.equal(got, want)
    (work/'adata'/'brick'/'test'/'good').rename(work/'adata'/'brick'/'test'/'Good')   # a defect type, with no masks, if taken as named
    res = cli('batch', '--methods', 'svdd', '--categories', 'brick', '--data', 'adata', '--smoke', '--runs', 'aruns', '--set', ITERS, cwd=work)
    clear_error(res, '1 of 1 runs failed')
    assert "brick/test/Good: the good test images' folder is 'good', in lower case: rename it" in res[1], res
    assert not (work/'aruns'/'svdd'/'brick'/'seed0'/'model.pt').exists()

def test_diverged_training_is_not_reported_as_trained(work):
    "A learning rate far too high: the loss turns NaN, and training stops with that said, instead of 'done' and a NaN model"
    res = cli('train', 'svdd', 'brick', *RUN, '--runs', 'druns', '--set', f'{ITERS},lr=1e6', cwd=work)
    clear_error(res, 'loss is nan at iteration', 'training diverged', 'train with a lower learning rate')
    assert not (work/'druns'/'svdd'/'brick'/'seed0'/'model.pt').exists()

# Issue 24: predict with a trained run; its bad input

PREDICT = ('predict', 'svdd', 'brick')
RUN_OPTS = (*RUN, '--runs', 'runs', '--set', ITERS)   # the trained run's options

def test_predict_with_a_trained_run(trained, work):
    "A verdict and an overlay per image (a folder and a file), the table printed; the threshold computed once, kept in the run folder; nothing else changes"
    before = md5s(trained)
    mac = work/'from_a_mac'; mac.mkdir(exist_ok=True)   # a folder copied from a Mac: a hidden `._name` file beside each image, not an image
    shutil.copy(work/'data'/'logo'/'test'/'good'/'000.png', mac/'000.png'); (mac/'._000.png').write_bytes(b'\0\5\26\7')
    args = (*PREDICT, 'data/brick/test', 'data/logo/test/good/000.png', 'from_a_mac', *RUN_OPTS, '--out', 'from_a_mac/pred')   # the overlays inside a folder it scans
    out = ok(cli(*args, cwd=work))
    res = load_json(mac/'pred'/'predictions.json')
    assert [Path(r['image']).parent.name for r in res['images']] == ['color', 'good', 'hole', 'paste', 'scratch', 'stain', 'good', 'from_a_mac']
    assert all((mac/'pred'/r['overlay']).is_file() and r['anomalous'] == (r['score'] > res['threshold']) for r in res['images'])
    assert f"threshold {res['threshold']:.4g}: the highest image score of the run's 4 normal training images" in out, out
    assert '| data/logo/test/good/000.png |' in out, out
    thr = trained/'threshold.json'
    assert load_json(thr)['threshold'] == res['threshold'] and len(load_json(thr)['training_scores']) == 4
    after = md5s(trained); after.pop('threshold.json')
    assert after == before                                                   # the model, bank and scores untouched
    mtime = thr.stat().st_mtime_ns
    ok(cli(*args, cwd=work))
    assert thr.stat().st_mtime_ns == mtime and load_json(mac/'pred'/'predictions.json') == res   # the same verdicts (not the overlays'), threshold not recomputed

def test_predict_bad_input(trained, work):
    "Each refused with one message before anything is written; the run folder unchanged"
    (work/'not_an_image.png').write_text('text'); (work/'a_file').write_text('')
    before = md5s(trained)
    cases = [(('data/brick/test/none.png', *RUN_OPTS), 'image data/brick/test/none.png does not exist'),
             (('not_an_image.png', *RUN_OPTS), 'cannot read image not_an_image.png'),
             (('data/brick/test', *RUN_OPTS, '--out', 'a_file'), 'output folder a_file is a file'),
             (('data/brick/test', *RUN_OPTS, '--seed', '1'), 'no trained model at runs/svdd/brick/seed1/model.pt'),
             (('data/brick/test', *RUN, '--runs', 'runs', '--set', SMALL), 'another config'),
             (('data/brick/test', *RUN_OPTS, '--release', 'data'), 'is not a Patch SVDD release folder')]
    for args, msg in cases: clear_error(cli(*PREDICT, *args, cwd=work), msg)
    assert md5s(trained) == before and not (work/'predictions').exists() and not (work/'runs'/'svdd-release').exists()
    run = work/'pruns'/'svdd'/'brick'/'seed0'; shutil.copytree(trained, run)   # a model file holding a pickled object
    torch.save(dict(encoder=torch.nn.Linear(2, 2)), run/'model.pt')
    clear_error(cli(*PREDICT, 'data/brick/test', *RUN, '--runs', 'pruns', '--set', ITERS, cwd=work),
                'holds a Python object (torch.nn.modules.linear.Linear)', 'refuses to unpickle')
    assert not (work/'predictions').exists()
