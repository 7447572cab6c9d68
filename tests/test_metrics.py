"""glancesvdd.metrics against independent slow implementations and the official Patch SVDD reference numbers"""
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import auc

from glancesvdd.core import GlanceSvddError
from glancesvdd.metrics import aupro, evaluate, pixel_auroc, pro_curve

FIXTURES = Path(__file__).parent / 'fixtures' / 'patchsvdd_official'


def brute_pro_points(maps, masks):
    "(fpr, pro) at every distinct score, image by image and region by region, with MVTec's 8-connected structure"
    regions = []
    for m, gt in zip(maps, masks):
        lab, n = ndimage.label(gt, structure=np.ones((3, 3)))
        regions += [m[lab == r] for r in range(1, n + 1)]
    ok = maps[~masks]
    fpr, pro = [0.], [0.]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        fpr.append(np.count_nonzero(ok >= t) / ok.size)
        pro.append(sum(np.count_nonzero(r >= t) / r.size for r in regions) / len(regions))
    return np.array(fpr), np.array(pro)


def brute_aupro(maps, masks, fpr_limit):
    "Cut the curve at fpr_limit (interpolated), integrate with sklearn's trapezoidal `auc`"
    fpr, pro = brute_pro_points(maps, masks)
    below = fpr < fpr_limit
    k = below.sum()  # first point at or beyond the limit
    y = pro[k - 1] + (pro[k] - pro[k - 1]) * (fpr_limit - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
    return auc(np.append(fpr[below], fpr_limit), np.append(pro[below], y)) / fpr_limit


def random_case(seed):
    "A few small images with scattered defect regions (diagonal contacts included), a good image, and many tied scores"
    rng = np.random.default_rng(seed)
    n, h, w = rng.integers(2, 5), rng.integers(6, 14), rng.integers(6, 14)
    masks = rng.random((n, h, w)) < rng.uniform(0.05, 0.3)
    masks[-1] = False
    masks[0, 0, 0] = True  # at least one region
    levels = rng.choice([4, 10, 1000])  # few levels: large tied areas; 1000: nearly all distinct
    maps = np.floor((rng.random(masks.shape) + rng.uniform(0, 1) * masks) * levels) / levels * rng.uniform(0.1, 100)
    return maps, masks


@pytest.mark.parametrize('seed', range(40))
def test_pro_curve_equals_brute_force(seed):
    maps, masks = random_case(seed)
    fpr, pro = pro_curve(maps, masks)
    bf, bp = brute_pro_points(maps, masks)
    np.testing.assert_allclose(fpr, bf, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pro, bp, rtol=0, atol=1e-12)
    on_curve = bf[bf > 0][len(bf[bf > 0]) // 2]  # a limit that falls exactly on a curve point
    for lim in (0.3, 0.01, 0.5, 1.0, on_curve):
        assert aupro(maps, masks, lim) == pytest.approx(brute_aupro(maps, masks, lim), abs=1e-12)


def test_curve_is_monotone_and_ends_at_one():
    maps, masks = random_case(100)
    fpr, pro = pro_curve(maps[:, None].astype(np.float16), masks[:, None])  # float16 maps as saved in scores.npz
    assert (np.diff(fpr) >= 0).all() and (np.diff(pro) >= 0).all()
    assert (fpr[0], pro[0], fpr[-1], pro[-1]) == (0, 0, 1, 1)


def test_pro_errors():
    maps, masks = random_case(0)
    with pytest.raises(GlanceSvddError, match='0 defect regions'): aupro(maps, np.zeros_like(masks))
    with pytest.raises(GlanceSvddError, match='0 defect-free pixels'): aupro(maps, np.ones_like(masks))
    with pytest.raises(GlanceSvddError, match='fpr_limit'): aupro(maps, masks, 0)
    with pytest.raises(GlanceSvddError, match='same shape'): evaluate([1., 0.], [1, 0], maps, masks[:, :2])


def test_pixel_auroc_matches_official_patch_svdd():
    "The fixture README gives the official maps' pixel AUROC on the anomalous test image (4 decimals)"
    ref = np.load(FIXTURES / 'reference.npz')
    assert ref['test_labels'][0] == 1
    for key, expected in [('maps_k64', 0.9942), ('maps_k32', 0.9995), ('maps_sum', 0.9992), ('maps_mult', 0.9987)]:
        assert pixel_auroc(ref[key][:1], ref['test_masks'][:1]) == pytest.approx(expected, abs=5e-5)
    res = evaluate(ref['image_scores'], ref['test_labels'], ref['maps_mult'], ref['test_masks'])
    assert res['image_auroc'] == 1.0  # 28.28 for the anomalous image against 5.7e-4 for the normal one
    assert 0 <= res['aupro'] <= 1 and res['pixel_auroc'] > 0.99
