"""The notebooks are committed with their outputs, so a reader on GitHub sees the tables they print from the live modules.
A cell tagged `table` prints such a table: this test runs its notebook again and compares the cell's output with the
committed one, so a table cannot go stale when a module changes. `make notebooks` refreshes every output."""
import os
from pathlib import Path

import pytest
from execnb.nbio import read_nb
from execnb.shell import CaptureShell

NBS = Path(__file__).resolve().parents[1]/'nbs'


def _tagged(nb): return [c for c in nb.cells if c.cell_type == 'code' and 'table' in c.get('metadata', {}).get('tags', [])]


def _text(outputs)->list:
    "What a reader reads of a cell's outputs: printed text and Markdown/plain results (pictures left out)"
    out = []
    for o in outputs:
        if o.get('output_type') == 'stream': out.append(''.join(o['text']))
        elif 'data' in o:
            d = o['data']
            out.append(''.join(d.get('text/markdown', d.get('text/plain', ''))))
    return out


TABLE_NBS = sorted(p for p in NBS.glob('*.ipynb') if _tagged(read_nb(p)))


def test_there_are_tables():
    assert len(TABLE_NBS) >= 6 and sum(len(_tagged(read_nb(p))) for p in TABLE_NBS) >= 10, TABLE_NBS


@pytest.mark.parametrize('path', TABLE_NBS, ids=lambda p: p.name)
def test_committed_tables_are_current(path, monkeypatch):
    committed = [_text(c.outputs) for c in _tagged(read_nb(path))]
    assert all(committed), f"{path.name}: a cell tagged 'table' has no committed output: run `make notebooks`"
    nb = read_nb(path)
    monkeypatch.chdir(path.parent); monkeypatch.setenv('IN_TEST', '1')
    CaptureShell(path).run_all(nb, exc_stop=True, preproc=lambda c: c.cell_type != 'code' or 'nbdev_export(' in c.source)
    now = [_text(c.outputs) for c in _tagged(nb)]
    for i, (a, b) in enumerate(zip(committed, now)):
        assert a == b, f"{path.name}: table cell {i} prints something else now: run `make notebooks`\n--- committed\n{a}\n--- now\n{b}"
