"""Issue 23's cases of the report and the data, through the `glancesvdd` command: a run folder given as the runs root, runs of an
older layout, seeds of one category made with different configs, a metrics.json that is not an object, Patch SVDD runs short of
the official schedule; 16-bit training images; a bank built for another encoder."""
import json, warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glancesvdd.core import save_json, load_json
from glancesvdd.data import make_synthetic_mvtec
from glancesvdd.runs import run_path

from command import cli


def fake(root, method, category, seed, config, **metrics):
    d = run_path(method, category, seed, root)
    save_json(config, d/'config.json'); save_json(metrics, d/'metrics.json')
    return d


def test_report_says_why(tmp_path):
    runs = tmp_path/'runs'
    for seed, lam, a in ((0, 1e-3, .9), (1, 1e-3, .8), (2, 1.0, .5)):   # seed 2: another lambda
        fake(runs, 'svdd', 'wood', seed, dict(category='wood', seed=seed, lambda_svdd=lam), image_auroc=a, pixel_auroc=.9, aupro=.8)
    save_json([0.9, 0.8], run_path('svdd', 'grid', 0, runs)/'metrics.json')        # valid JSON, not an object
    save_json(dict(image_auroc=.9), runs/'glance'/'carpet'/'metrics.json')           # no seed0/ folder: an older layout
    _, out = cli('report', '--runs', 'runs', '--out', 'rep', cwd=tmp_path)
    index = (tmp_path/'rep'/'index.md').read_text()
    assert 'holds a list, not an object' in out                                     # left out, named
    assert 'outside a seed<k>/ folder' in index and 'svdd Wood (2 configs)' in index
    s1 = (tmp_path/'rep'/'svdd_table_s1.md').read_text()
    assert '| Wood | 0.965 | — | 0.850 ± 0.071 |' in s1                              # seeds 0 and 1 only, never 0.733 ± 0.2
    _, out = cli('report', '--runs', 'runs/svdd/wood/seed0', '--out', 'rep2', cwd=tmp_path)
    assert 'is a run folder, not a runs root' in (tmp_path/'rep2'/'index.md').read_text()


def test_short_schedule_is_marked(tmp_path):
    runs = tmp_path/'runs'
    d = fake(runs, 'svdd', 'wood', 0, dict(category='wood', seed=0, epochs=300), image_auroc=.9, pixel_auroc=.9, aupro=.8)
    save_json(dict(iters=4, steps_per_epoch=327), d/'train.json')                    # a smoke run: 4 steps
    cli('report', '--runs', 'runs', '--out', 'rep', cwd=tmp_path)
    assert '4 of the official 97,773 training steps' in (tmp_path/'rep'/'svdd_table_s1.md').read_text()


def test_16_bit_images_train(tmp_path):
    "A category whose images are 16-bit grayscale PNGs trains and is evaluated from what they show, not from white images"
    data = make_synthetic_mvtec(tmp_path/'data', categories=('grass',), n_train=4, n_test_good=1, n_test_defect=2, image_size=128)
    for f in (data/'grass').rglob('*.png'):
        if 'ground_truth' in f.parts: continue
        g = np.asarray(Image.open(f).convert('L'), np.uint16) * 257                   # the same picture at 16 bits
        Image.fromarray(g).save(f)
    assert Image.open(next((data/'grass'/'train'/'good').glob('*.png'))).mode.startswith('I')
    for cmd in ('train', 'evaluate'): cli(cmd, 'svdd', 'grass', '--data', 'data', '--runs', 'runs', '--smoke', '--set', 'image_size=128', cwd=tmp_path)
    rec = load_json(run_path('svdd', 'grass', 0, tmp_path/'runs')/'train.json')
    assert not rec['collapsed'] and rec['spread_32'] > 1e-4                          # white images would give no spread at all
