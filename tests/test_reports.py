"Reports from fake run folders: files written, table values (ours, paper, difference), missing categories, mean rows, transcription."
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glancesvdd.core import GlanceSvddError, save_json
from glancesvdd.runs import run_path, save_scores
from glancesvdd.reports import (GLANCE_TABLE4, GLANCE_TABLE4_METHODS, SVDD_TABLE_S1, SVDD_TABLE_S2, TABLE4_CATEGORIES,
                                average_seeds, check_published_means, collect_runs, comparison_table, figures_from_run,
                                glance_table4, render_report, svdd_table_s1, svdd_table_s2)


def fake_run(root, data, method, category, seed, metrics, config=None, n=6, size=24, scores=True):
    "A run folder: config.json, metrics.json and (optionally) scores.npz whose test images are PNGs under `data`"
    d = run_path(method, category, seed, root)
    save_json(config or dict(category=category, seed=seed), d/'config.json')
    save_json(metrics, d/'metrics.json')
    if scores:
        rng = np.random.default_rng(seed)
        labels = (np.arange(n) >= n // 2).astype(int)
        defects = ['good' if l == 0 else ('crack', 'hole')[i % 2] for i, l in enumerate(labels)]
        masks = np.zeros((n, size, size), np.uint8); masks[labels == 1, 5:12, 6:15] = 1
        maps = masks + 0.3 * rng.random((n, size, size))
        paths = []
        for i in range(n):
            p = Path(data)/category/'test'/defects[i]/f'{i:03d}.png'; p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(p); paths.append(str(p))
        save_scores(d, maps.reshape(n, -1).max(1), labels, maps, masks, defects, paths)
    return d


def md_rows(text):
    "The rows of the (first) Markdown table in `text` as lists of cells, header first"
    return [[c.strip() for c in line.strip().strip('|').split(' | ')] for line in text.splitlines()
            if line.startswith('| ') and not line.startswith('|:')]


def by_first(rows, n=1):
    "Rows keyed by their first `n` cells, each a dict header -> cell"
    head = rows[0]
    return {tuple(r[:n]) if n > 1 else r[0]: dict(zip(head, r)) for r in rows[1:]}


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp('report')
    root, data = d/'runs', d/'mvtec'
    fake_run(root, data, 'glance', 'carpet', 0, dict(image_auroc=0.90, pixel_auroc=0.95, aupro=0.90))
    fake_run(root, data, 'glance', 'carpet', 1, dict(image_auroc=0.94, pixel_auroc=0.97, aupro=0.94))
    fake_run(root, data, 'glance', 'metal_nut', 0, dict(image_auroc=0.80, pixel_auroc=0.90, aupro=0.85))
    fake_run(root, data, 'svdd', 'carpet', 0, dict(image_auroc=0.95, pixel_auroc=0.93, aupro=0.88, image_auroc_k64=0.90,
                                                   pixel_auroc_k64=0.91, image_auroc_k32=0.92, pixel_auroc_k32=0.94))
    fake_run(root, data, 'svdd', 'wood', 0, dict(image_auroc=0.97, pixel_auroc=0.90, aupro=0.80, image_auroc_k64=0.96,
                                                 pixel_auroc_k64=0.85, image_auroc_k32=0.94, pixel_auroc_k32=0.89))
    fake_run(root, data, 'svdd_flat', 'wood', 0, dict(image_auroc=0.70, pixel_auroc=0.80),
             config=dict(category='wood', seed=0, hierarchical=False))
    fake_run(root, data, 'glance', 'zipper', 0, dict(image_auroc=0.99), scores=False)  # evaluated, scores.npz gone
    files = render_report(root, d/'out')
    return d, files


def test_transcription_means_match_printed_rows():
    means = check_published_means()
    for col, (computed, printed) in means['table4'].items(): assert abs(computed - printed) <= 0.01, col
    for col, (computed, printed) in means['table_s1'].items(): assert abs(computed - printed) <= 0.001, col
    assert set(means['table4']) == set(GLANCE_TABLE4_METHODS)
    assert (SVDD_TABLE_S2[-1]['det'], SVDD_TABLE_S2[-1]['seg']) == (SVDD_TABLE_S1['average']['det'], SVDD_TABLE_S1['average']['seg'])
    assert len(TABLE4_CATEGORIES) == 15 and TABLE4_CATEGORIES[:3] == ('carpet', 'grid', 'leather')


def test_collect_and_average(report):
    d, _ = report
    runs = collect_runs(d/'runs')
    assert [(r['method'], r['category'], r['seed']) for r in runs][:3] == [('glance', 'carpet', 0), ('glance', 'carpet', 1), ('glance', 'metal_nut', 0)]
    res = {(r['method'], r['category']): r for r in average_seeds(runs)}
    carpet = res['glance', 'carpet']
    assert carpet['seeds'] == [0, 1]
    assert carpet['mean']['image_auroc'] == pytest.approx(0.92)
    assert carpet['std']['image_auroc'] == pytest.approx(np.std([0.90, 0.94], ddof=1))
    assert res['glance', 'metal_nut']['std'] == {}
    assert len(collect_runs(d/'runs', method='svdd')) == 2


def test_files_written_and_index_links(report):
    d, files = report
    out = d/'out'
    for stem in ('glance_table4', 'svdd_table_s1', 'svdd_table_s2', 'comparison'):
        for ext in ('md', 'tex', 'png'): assert out/f'{stem}.{ext}' in files and (out/f'{stem}.{ext}').exists()
    for name in ('glance_carpet_seed0.png', 'glance_metal_nut_seed0.png', 'svdd_carpet_seed0.png', 'svdd_wood_seed0.png',
                 'svdd_flat_wood_seed0.png', 'svdd_classes_1.png', 'index.md'):
        assert out/name in files, name
    assert all(f.exists() for f in files)
    assert Image.open(out/'glance_carpet_seed0.png').format == 'PNG'
    index = (out/'index.md').read_text()
    links = re.findall(r'\]\(([^)]+)\)', index)
    assert links and all((out/l).exists() for l in links)               # every link is relative and resolves
    assert 'glance zipper: no figure' in index                           # a run without scores is listed, not fatal
    assert not list(out.glob('.*.tmp'))


def test_table4_values(report):
    d, _ = report
    rows = by_first(md_rows((d/'out'/'glance_table4.md').read_text()))
    assert rows['Carpet']['GLANCE (paper)'] == '0.92'
    assert rows['Carpet']['GLANCE (ours)'] == '0.920 ± 0.028'
    assert rows['Carpet']['Δ (ours − paper)'] == '+0.000'
    assert rows['Metal Nut']['GLANCE (ours)'] == '0.800' and rows['Metal Nut']['Δ (ours − paper)'] == '-0.050'
    assert rows['Zipper']['GLANCE (ours)'] == '0.990' and rows['Zipper']['Δ (ours − paper)'] == '-0.010'
    assert rows['Grid']['GLANCE (ours)'] == '—' and rows['Grid']['Δ (ours − paper)'] == '—'    # missing: marked
    assert rows['Grid']['GeoTrans'] == '0.62' and rows['Grid']['GLANCE (paper)'] == '0.67'
    assert [rows['Mean'][m] for m in ('GeoTrans', 'GANomaly', 'AE', 'ARNet', 'AESc+Stain', 'GLANCE (paper)')] == \
           ['0.67', '0.76', '0.75', '0.84', '0.89', '0.91']                                      # as printed
    assert rows['Mean']['GLANCE (ours)'] == '—'                                                   # not all 15 have runs
    sub = rows['Mean (3/15 with runs)']
    assert sub['GLANCE (ours)'] == f'{np.mean([0.92, 0.80, 0.99]):.3f}'
    assert sub['GLANCE (paper)'] == f'{np.mean([0.92, 0.85, 1.00]):.3f}'
    assert sub['Δ (ours − paper)'] == f'{np.mean([0.92, 0.80, 0.99]) - np.mean([0.92, 0.85, 1.00]):+.3f}'
    assert sub['GeoTrans'] == f'{np.mean([0.44, 0.81, 0.82]):.3f}'


def test_table4_all_categories_uses_printed_mean(tmp_path):
    for i, c in enumerate(TABLE4_CATEGORIES):
        fake_run(tmp_path, None, 'glance', c, 0, dict(image_auroc=0.80 + 0.01 * i), scores=False)
    t = glance_table4(average_seeds(collect_runs(tmp_path)))
    mean = t.rows[-1]
    assert mean[0] == 'Mean' and len(t.rows) == 16                       # no partial row once all 15 are there
    ours = np.mean([0.80 + 0.01 * i for i in range(15)])
    assert mean[-2:] == [f'{ours:.3f}', f'{ours - 0.91:+.3f}']           # against the printed 0.91


def test_table_s1_values(report):
    d, _ = report
    rows = by_first(md_rows((d/'out'/'svdd_table_s1.md').read_text()))
    assert rows['Carpet'] == {'Class': 'Carpet', 'Det. (paper)': '0.929', 'Det. (release)': '—', 'Det. (ours)': '0.950', 'Δ Det.': '+0.021',
                              'Seg. (paper)': '0.926', 'Seg. (release)': '—', 'Seg. (ours)': '0.930', 'Δ Seg.': '+0.004'}
    assert rows['Wood']['Δ Seg.'] == '-0.008'
    assert rows['Bottle']['Det. (ours)'] == '—'
    assert rows['Average']['Det. (paper)'] == '0.921' and rows['Average']['Det. (ours)'] == '—'
    sub = rows['Average (2/15 with runs)']
    assert sub['Det. (ours)'] == '0.960' and sub['Det. (paper)'] == f'{np.mean([0.929, 0.965]):.3f}'
    assert sub['Δ Seg.'] == f'{0.915 - np.mean([0.926, 0.908]):+.3f}'


def test_table_s2_values(report):
    d, _ = report
    rows = md_rows((d/'out'/'svdd_table_s2.md').read_text())[1:]
    flat, h64, h32, agg = rows
    assert flat[:5] == ['✗', '64', '0.810', '0.700 (1/15)', '-0.110']     # the flat-encoder run, its only scale
    assert h64[:5] == ['✓', '64', '0.894', '0.930 (2/15)', '+0.036']      # mean of the K=64 metrics 0.90, 0.96
    assert h32[5:] == ['0.957', '0.915 (2/15)', '-0.042']                  # mean of the K=32 pixel metrics 0.94, 0.89
    assert agg[3] == '0.960 (2/15)'                                         # the runs' main result, not the flat run
    t = svdd_table_s2([])
    assert all(r[3] == '—' for r in t.rows)


def test_comparison_values(report):
    d, _ = report
    rows = by_first(md_rows((d/'out'/'comparison.md').read_text()), n=2)
    g, s = rows['Carpet', 'GLANCE'], rows['Carpet', 'Patch SVDD']
    assert (g['Image AUROC (ours)'], g['Image AUROC (paper)'], g['Image AUROC (Δ)']) == ('0.920 ± 0.028', '0.92', '+0.000')
    assert (g['Pixel AUROC (paper)'], g['AUPRO (ours)']) == ('—', '0.920 ± 0.028')
    assert (s['Pixel AUROC (ours)'], s['Pixel AUROC (paper)'], s['Pixel AUROC (Δ)']) == ('0.930', '0.926', '+0.004')
    assert rows['Wood', 'GLANCE']['Image AUROC (ours)'] == '—'                # no GLANCE run on wood
    mg, ms = rows['Mean (1 in common)', 'GLANCE'], rows['Mean (1 in common)', 'Patch SVDD']   # only carpet has both
    assert (mg['Image AUROC (ours)'], mg['Image AUROC (paper)'], mg['AUPRO (paper)']) == ('0.920', '0.920', '—')
    assert (ms['Image AUROC (ours)'], ms['Image AUROC (Δ)']) == ('0.950', '+0.021')
    assert ('Grid', 'GLANCE') not in rows                                     # categories without any run are left out


def test_figure_method_and_missing_images(tmp_path):
    g = fake_run(tmp_path/'runs', tmp_path/'mvtec', 'glance', 'carpet', 0, dict(image_auroc=1.0))
    s = fake_run(tmp_path/'runs', tmp_path/'mvtec', 'svdd', 'carpet', 0, dict(image_auroc=1.0))
    pg, ps = figures_from_run(g, tmp_path/'figs', n=2), figures_from_run(s, tmp_path/'figs', n=2)
    assert (pg.name, ps.name) == ('glance_carpet_seed0.png', 'svdd_carpet_seed0.png')
    (w, h), (w2, h2) = Image.open(pg).size, Image.open(ps).size
    assert h > w and w2 > h2                       # GLANCE: three rows of two; Patch SVDD: one row of two
    for p in (tmp_path/'mvtec').rglob('*.png'): p.unlink()
    with pytest.raises(GlanceSvddError, match='is missing'): figures_from_run(g, tmp_path/'figs')


def test_damaged_side_files_are_said_not_fatal(tmp_path):
    "A run's damaged train.json or provenance.json: the report is written, and says which file it could not read"
    fake_run(tmp_path/'runs', tmp_path/'data', 'svdd', 'bottle', 0, dict(image_auroc=.9, pixel_auroc=.9, aupro=.8))
    run = tmp_path/'runs'/'svdd'/'bottle'/'seed0'
    (run/'train.json').write_text('{"iters": 2'); (run/'provenance.json').write_text('')
    with pytest.warns(UserWarning, match='is not valid JSON'):
        files = render_report(tmp_path/'runs', tmp_path/'out')
    index = (tmp_path/'out'/'index.md').read_text()
    assert tmp_path/'out'/'index.md' in files and 'train.json damaged: how it was trained is unknown' in index
    assert '**svdd Bottle** (../runs/svdd/bottle/seed0): provenance.json damaged' in index, index
