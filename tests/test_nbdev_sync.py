"The library is exported from the notebooks, never edited by hand; notebooks are committed clean; README.md follows nbs/index.ipynb."
import filecmp, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

@pytest.fixture(scope='module')
def copy(tmp_path_factory):
    "A copy of the project's notebooks and library, exported and cleaned there (the checkout is never touched)"
    d = tmp_path_factory.mktemp('sync')
    for name in ('nbs', 'glancesvdd'): shutil.copytree(ROOT/name, d/name, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
    for name in ('settings.ini', 'README.md'): shutil.copy(ROOT/name, d/name)
    for cmd in ('nbdev_export', 'nbdev_clean'): subprocess.run([str(BIN/cmd)], cwd=d, check=True, capture_output=True)
    return d

def _files(root, pattern): return sorted(p.relative_to(root) for p in root.rglob(pattern) if '__pycache__' not in p.parts and '.ipynb_checkpoints' not in p.parts)

def test_library_matches_notebooks(copy):
    assert _files(ROOT/'glancesvdd', '*.py') == _files(copy/'glancesvdd', '*.py'), "exported module set differs: run nbdev_export"
    stale = [str(f) for f in _files(ROOT/'glancesvdd', '*.py') if not filecmp.cmp(ROOT/'glancesvdd'/f, copy/'glancesvdd'/f, shallow=False)]
    assert not stale, f"glancesvdd/ is out of sync with nbs/ (run nbdev_export): {stale}"

def test_notebooks_are_clean(copy):
    dirty = [str(f) for f in _files(ROOT/'nbs', '*.ipynb') if not filecmp.cmp(ROOT/'nbs'/f, copy/'nbs'/f, shallow=False)]
    assert not dirty, f"notebooks not clean (run nbdev_clean): {dirty}"

def test_readme_follows_index_notebook(tmp_path):
    subprocess.run([str(BIN/'jupyter'), 'nbconvert', '--to', 'markdown', str(ROOT/'nbs'/'index.ipynb'),
                    '--output-dir', str(tmp_path), '--output', 'README'], check=True, capture_output=True)
    assert (tmp_path/'README.md').read_text() == (ROOT/'README.md').read_text(), "README.md is stale: run `make readme`"
