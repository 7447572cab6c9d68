"Issue 13: the release route (download, evaluate --release, report) end to end through the CLI, its bad inputs, and figures/."
import io, re, shutil, subprocess, sys, tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from glancesvdd.core import GlanceSvddError, load_json, save_json
from glancesvdd.data import make_synthetic_mvtec, sha256sum
from glancesvdd.svdd.release import RELEASE_SHA256, RELEASE_TOP, download_release, release_checkpoint

from command import BIN, cli
ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT/'tests'/'fixtures'/'patchsvdd_official'   # byte-identical copies of two released files: bottle, wood




def fake_release(root, cats=('bottle', 'wood')):
    "A release folder (ckpts/<category>/enchier.pkl) holding the fixture files"
    for c in cats:
        release_checkpoint(root, c).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIX/f'{c}_enchier.pkl', release_checkpoint(root, c))
    return Path(root)


def fake_archive(path, cats=('bottle', 'wood')):
    "A .tar.gz with the layout of GitHub's archive of the release commit"
    with tarfile.open(path, 'w:gz') as tar:
        for c in cats:
            data = (FIX/f'{c}_enchier.pkl').read_bytes()
            ti = tarfile.TarInfo(f'{RELEASE_TOP}/ckpts/{c}/enchier.pkl'); ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return Path(path)


def synthetic_mvtec(root):
    "Two synthetic categories under the MVTec AD names of the two fixture checkpoints (3 train, 3 test images each)"
    for src, name in (('logo', 'bottle'), ('brick', 'wood')):
        make_synthetic_mvtec(root/'.src', [src], n_train=3, n_test_good=1, n_test_defect=1, defects=('stain', 'scratch'))
        (root/'.src'/src).rename(root/name)
    shutil.rmtree(root/'.src')
    return root


def main_cli(*args, capsys):
    "The `glancesvdd` command in this process (same parser and error handling); returns (exit code, stdout + stderr)"
    from glancesvdd.cli import main
    rc = main([str(a) for a in args]); out = capsys.readouterr()
    return rc, out.out + out.err


def test_download_archive_clone_and_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path); monkeypatch.setenv('GLANCESVDD_PROGRESS', 'log')  # what main() sets for evaluate
    a = fake_archive(tmp_path/'release.tar.gz')
    rc, out = main_cli('download', 'patchsvdd-release', '--root', 'd', '--archive', a, '--categories', 'bottle,wood', capsys=capsys)
    rel = tmp_path/'d'/'patchsvdd_release'
    assert rc == 0 and 'sha256 checked' in out and sha256sum(release_checkpoint(rel, 'wood')) == RELEASE_SHA256['wood']
    rc, _ = main_cli('download', 'patchsvdd-release', '--root', 'e', '--from', rel, '--categories', 'bottle', capsys=capsys)
    assert rc == 0 and sha256sum(release_checkpoint(tmp_path/'e'/'patchsvdd_release', 'bottle')) == RELEASE_SHA256['bottle']
    rc, out = main_cli('download', 'patchsvdd-release', '--root', 'f', '--from', rel, capsys=capsys)  # all 15 asked
    assert rc == 2 and "'cable' has no checkpoint" in out and not (tmp_path/'f'/'patchsvdd_release').exists()
    with pytest.raises(GlanceSvddError, match='--archive PATH.*--from DIR'):   # offline: where to get it, how to pass it
        download_release(tmp_path/'g', url='http://127.0.0.1:9/release.tar.gz', progress=False)


def test_bad_input_one_message_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path); monkeypatch.setenv('GLANCESVDD_PROGRESS', 'log')  # what main() sets for evaluate
    synthetic_mvtec(tmp_path/'data')
    rel = fake_release(tmp_path/'rel', ('bottle',))
    ev = ('evaluate', 'svdd', '--data', 'data', '--runs', 'runs', '--categories')
    cases = [((*ev, 'bottle', '--release', tmp_path/'data'), 'is not a Patch SVDD release folder'),
             ((*ev, 'bottle,wood', '--release', rel), "'wood' has no checkpoint"),
             (('evaluate', 'glance', '--release', rel, '--data', 'data', '--categories', 'bottle'), 'Patch SVDD encoders')]
    for args, msg in cases:
        rc, out = main_cli(*args, capsys=capsys)
        assert rc == 2 and msg in out, out
    torch.save({'conv.weight': torch.zeros(1)}, release_checkpoint(rel, 'bottle'))  # not an EncoderHier state_dict
    rc, out = main_cli(*ev, 'bottle', '--release', rel, '--allow-modified', capsys=capsys)
    assert rc == 2 and 'not an official Patch SVDD encoder' in out
    with open(release_checkpoint(rel, 'bottle'), 'ab') as f: f.write(b'\0')       # not the released bytes
    rc, out = cli(*ev, 'bottle', '--release', rel, cwd=tmp_path, check=False)      # the installed command: exit status, no traceback
    assert rc == 2 and 'is not the release' in out and '--allow-modified' in out and 'Traceback' not in out, out
    assert not (tmp_path/'runs').exists()   # refused before anything was written


def test_release_on_slurm_gets_the_settings(tmp_path, capsys, monkeypatch):
    "evaluate --release --executor slurm hands --slurm and --slurm-config to batch, as `glancesvdd batch` does"
    import glancesvdd.batch as B
    monkeypatch.chdir(tmp_path); synthetic_mvtec(tmp_path/'data'); fake_release(tmp_path/'rel')
    seen = {}
    def fake_batch(jobs, executor='local', force=False, slurm=None, **kw):
        seen.update(executor=executor, slurm=slurm, categories=[j.category for j in jobs], workers=kw.get('workers'))
        return [dict(method=j.method, category=j.category, seed=j.seed, status='submitted') for j in jobs]
    monkeypatch.setattr(B, 'batch', fake_batch)   # the command imports batch() when it runs
    (tmp_path/'slurm.json').write_text('{"partition": "gpu", "timeout_min": 60}')
    rc, out = main_cli('evaluate', 'svdd', '--release', 'rel', '--categories', 'bottle,wood', '--data', 'data', '--executor', 'slurm',
                       '--slurm-config', 'slurm.json', '--slurm', 'timeout_min=30,gpus_per_node=1', capsys=capsys)
    assert rc == 0, out
    assert seen == dict(executor='slurm', slurm=dict(partition='gpu', timeout_min=30, gpus_per_node=1), categories=['bottle', 'wood'], workers=0)
    rc, out = main_cli('evaluate', 'svdd', '--release', 'rel', '--categories', 'bottle', '--data', 'data', '--workers', '3', capsys=capsys)
    assert rc == 0 and (seen['executor'], seen['workers']) == ('local', 3), out
    rc, out = main_cli('evaluate', 'svdd', '--release', 'rel', '--categories', 'bottle', '--data', 'data', '--executor', 'slurm',
                       '--slurm-config', 'missing.json', capsys=capsys)
    assert rc == 2 and 'missing.json does not exist' in out


@pytest.fixture(scope='module')
def release_runs(tmp_path_factory):
    "evaluate --release on bottle and wood: wood first fails (its folder was made with another config), then resumes"
    d = tmp_path_factory.mktemp('release')
    synthetic_mvtec(d/'data'); fake_release(d/'rel')
    save_json(dict(category='wood', sha256='0' * 64), d/'runs'/'svdd-release'/'wood'/'seed0'/'config.json')
    args = ('evaluate', 'svdd', '--release', 'rel', '--categories', 'all', '--data', 'data', '--runs', 'runs', '--device', 'cpu')
    rc, first = cli(*args, cwd=d, check=False)
    shutil.rmtree(d/'runs'/'svdd-release'/'wood')
    _, second = cli(*args, cwd=d)
    return d, rc, first, second


def test_release_runs_fail_alone_and_resume(release_runs):
    d, rc, first, second = release_runs
    assert rc == 2 and '| svdd-release | bottle | 0 | done |' in first and '| svdd-release | wood | 0 | failed |' in first, first
    assert 'GlanceSvddError: run folder' in first     # made with another config (the note shows its start)
    assert '| svdd-release | bottle | 0 | skipped |' in second and '| svdd-release | wood | 0 | done |' in second, second


@pytest.mark.parametrize('category', ['bottle', 'wood'])
def test_release_run_folder(release_runs, category):
    run = release_runs[0]/'runs'/'svdd-release'/category/'seed0'
    for f in ('config.json', 'model.pt', 'train.json', 'scores.npz', 'metrics.json', 'evaluate_release.ipynb', 'evaluate_release.log'):
        assert (run/f).exists(), f
    cfg, m = load_json(run/'config.json'), load_json(run/'metrics.json')
    assert (cfg['method'], cfg['sha256'], cfg['modified'], cfg['category']) == ('svdd-release', RELEASE_SHA256[category], False, category)
    assert cfg['checkpoint'].endswith(f'ckpts/{category}/enchier.pkl') and cfg['image_size'] == 256
    assert m['sha256'] == RELEASE_SHA256[category] and m['collapsed'] is False
    assert {'image_auroc_k64', 'pixel_auroc_k32', 'aupro'} <= set(m) and m['n_images'] == 3
    with np.load(run/'scores.npz') as s: scores = dict(s)
    assert scores['maps'].shape == (3, 256, 256) and len(scores['bank_paths']) == 3
    # the route's scores are the library's own on the same images, computed apart from the notebooks and the command
    from glancesvdd.data import load_split
    from glancesvdd.svdd.model import load_official_encoder
    from glancesvdd.svdd.infer import build_bank, score_images
    data = release_runs[0]/cfg['data_root']          # relative to the folder the command ran in
    enc = load_official_encoder(FIX/f'{category}_enchier.pkl')
    train, test = (load_split(data, category, sp, progress=False) for sp in ('train', 'test'))
    out = score_images(enc, test['images'], build_bank(enc, train['images']), device='cpu')
    np.testing.assert_allclose(scores['image_scores'], out['image_scores'].numpy(), rtol=1e-5)
    from sklearn.metrics import roc_auc_score
    assert m['image_auroc'] == pytest.approx(roc_auc_score(test['labels'], out['image_scores']), abs=1e-9)


def test_report_and_explorer_open_the_release_runs(release_runs):
    d = release_runs[0]
    cli('report', '--runs', 'runs', '--out', 'figs', cwd=d)
    rows = {r.split(' | ')[0].strip('| '): r for r in (d/'figs'/'svdd_table_s1.md').read_text().splitlines() if r.startswith('| ')}
    m = load_json(d/'runs'/'svdd-release'/'bottle'/'seed0'/'metrics.json')
    assert rows['Bottle'].startswith(f"| Bottle | 0.986 | {m['image_auroc']:.3f} | — | — | 0.981 | {m['pixel_auroc']:.3f} | — | — |")
    assert 'Leather †' in rows and '0.501 detection AUROC' in (d/'figs'/'svdd_table_s1.md').read_text()
    assert 'Patch SVDD (release)' in (d/'figs'/'comparison.md').read_text()
    from glancesvdd.viz import explore
    ex = explore(d/'runs')
    assert {r['method'] for r in ex.runs} == {'svdd-release'} and {r['category'] for r in ex.runs} == {'bottle', 'wood'}


def test_committed_figures_are_current(tmp_path, monkeypatch):
    "figures/ is what `glancesvdd report --runs results --out figures` makes of the committed records: its tables must equal that now"
    from glancesvdd.reports import render_report
    shutil.copytree(ROOT/'results', tmp_path/'results')       # a copy beside the output, as results/ is beside figures/ in the repository
    monkeypatch.chdir(tmp_path)
    files = render_report('results', 'figures')
    committed = ROOT/'figures'
    assert {f.name for f in files} == {f.name for f in committed.iterdir() if f.name != 'README.md'}
    for f in files:
        if f.suffix not in ('.md', '.tex'): continue
        assert f.read_text() == (committed/f.name).read_text(), f"figures/{f.name} is stale: run `glancesvdd report --runs results --out figures`"
    index = (committed/'index.md').read_text()
    assert '0.956' in (committed/'svdd_table_s1.md').read_text() and '28,000 of the official 97,773 training steps' in index or \
           '28,000 of the official 97,773 training steps' in (committed/'svdd_table_s1.md').read_text()
    for link in re.findall(r'\]\((\.\./results/[^)]+)\)', index): assert (committed/link).exists(), link   # the records' pictures
    assert (committed/'README.md').exists()


def test_predict_with_a_released_encoder(tmp_path):
    "Issue 24: `predict svdd --release` makes the release's run folder (sha256 checked), sets its threshold, gives a verdict per image"
    synthetic_mvtec(tmp_path/'data'); rel = fake_release(tmp_path/'rel', ('bottle',))
    args = ('predict', 'svdd', 'bottle', 'data/bottle/test', '--release', rel, '--data', 'data', '--out', 'pred')
    _, out = cli(*args, '--runs', 'runs', cwd=tmp_path)
    run, res = tmp_path/'runs'/'svdd-release'/'bottle'/'seed0', load_json(tmp_path/'pred'/'predictions.json')
    assert len(res['images']) == 3 and all((tmp_path/'pred'/r['overlay']).is_file() for r in res['images'])
    assert {'model.pt', 'bank.pt', 'train.json', 'threshold.json'} <= {p.name for p in run.iterdir()}
    assert load_json(run/'config.json')['sha256'] == RELEASE_SHA256['bottle'] and 'normal training images' in out
    with open(release_checkpoint(rel, 'bottle'), 'ab') as f: f.write(b'\0')       # not the released bytes
    rc, out = cli(*args, '--runs', 'runs2', cwd=tmp_path, check=False)
    assert rc == 2 and 'is not the release' in out and 'Traceback' not in out and not (tmp_path/'runs2').exists(), out
