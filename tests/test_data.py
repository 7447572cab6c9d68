"glancesvdd.data: bad input, image reading, MVTec download/extraction/resume, CIFAR-10 one-class, synthetic set"
import hashlib, io, pickle, shutil, socket, tarfile, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from cifar_format import NAMES, write_cifar as _write_cifar
from glancesvdd.core import GlanceSvddError
from glancesvdd.data import (MVTEC_CATEGORIES, MVTEC_OBJECTS, MVTEC_TEXTURES, SYNTHETIC_CATEGORIES, SYNTHETIC_DEFECTS,
                             CIFAR10OneClass, MVTecAD, check_mvtec_layout, cifar10_images, download_file, download_mvtec, load_split,
                             make_synthetic_mvtec, sha256sum, synthetic_sample)

SMALL = dict(categories=('brick', 'logo'), n_train=3, n_test_good=2, n_test_defect=1, image_size=64)

@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    "A small synthetic set, written once; tests copy it before changing it"
    return make_synthetic_mvtec(tmp_path_factory.mktemp('synth')/'root', **SMALL)

@pytest.fixture
def root(synth, tmp_path):
    "A private copy of the small synthetic set"
    return Path(shutil.copytree(synth, tmp_path/'root'))

# ---------------------------------------------------------------- categories and layout errors

def test_category_lists():
    assert len(MVTEC_CATEGORIES) == 15 and set(MVTEC_TEXTURES) | set(MVTEC_OBJECTS) == set(MVTEC_CATEGORIES)
    assert MVTEC_TEXTURES == ('carpet', 'grid', 'leather', 'tile', 'wood') and 'metal_nut' in MVTEC_OBJECTS

def test_missing_root(tmp_path):
    with pytest.raises(GlanceSvddError, match='does not exist') as e: MVTecAD(tmp_path/'nowhere'/'mvtec_ad', 'bottle')
    assert 'glancesvdd download mvtec --root' in str(e.value) and 'download_mvtec' in str(e.value)
    assert str(tmp_path/'nowhere') in str(e.value)

def test_unknown_category(root):
    with pytest.raises(GlanceSvddError, match='unknown category') as e: MVTecAD(root, 'botle')
    assert all(c in str(e.value) for c in MVTEC_CATEGORIES)

def test_missing_category_folder(root):
    with pytest.raises(GlanceSvddError, match='category folder') as e: check_mvtec_layout(root, 'bottle')
    assert str(root/'bottle') in str(e.value)

def test_own_category_in_the_layout_is_accepted(root):
    (root/'brick').rename(root/'my_parts')
    assert len(MVTecAD(root, 'my_parts', 'test')) == 2 + len(SYNTHETIC_DEFECTS)

@pytest.mark.parametrize('remove,split', [('test', 'test'), ('train/good', 'train'), ('train', 'train')])
def test_missing_split(root, remove, split):
    shutil.rmtree(root/'brick'/remove)
    with pytest.raises(GlanceSvddError, match='does not exist') as e: MVTecAD(root, 'brick', split)
    assert str(root/'brick'/split) in str(e.value) and 'ground_truth' in str(e.value)  # names the path and the layout
    MVTecAD(root, 'brick', 'test' if split == 'train' else 'train')  # the other split still loads

def test_empty_split(root):
    for p in (root/'brick'/'train'/'good').iterdir(): p.unlink()
    with pytest.raises(GlanceSvddError, match='holds no images'): MVTecAD(root, 'brick', 'train')

def test_mask_missing(root):
    (root/'logo'/'ground_truth'/'hole'/'000_mask.png').unlink()
    with pytest.raises(GlanceSvddError, match='has no mask') as e: MVTecAD(root, 'logo', 'test')
    assert str(root/'logo'/'test'/'hole'/'000.png') in str(e.value) and '000_mask.png' in str(e.value)
    MVTecAD(root, 'logo', 'train')  # train needs no masks

def test_unknown_split(root):
    with pytest.raises(GlanceSvddError, match="'train' or 'test'"): MVTecAD(root, 'brick', 'val')

# ---------------------------------------------------------------- reading files

@pytest.mark.parametrize('keep', [0.1, 0.5, 0.9])
def test_truncated_png(root, keep):
    p = root/'brick'/'train'/'good'/'001.png'
    data = p.read_bytes(); p.write_bytes(data[:int(len(data) * keep)])
    ds = MVTecAD(root, 'brick')
    ds[0]  # the others still load
    with pytest.raises(GlanceSvddError, match='cannot read image') as e: ds[1]
    assert str(p) in str(e.value)

def test_text_file_named_png(root):
    p = root/'brick'/'test'/'good'/'001.png'; p.write_text('hello, I am not a picture')
    ds = MVTecAD(root, 'brick', 'test')
    with pytest.raises(GlanceSvddError, match='cannot read image') as e: ds[ds.samples.index((p, None, 'good'))]
    assert str(p) in str(e.value)

def test_grayscale_is_replicated_to_rgb(root):
    p = root/'brick'/'train'/'good'/'000.png'
    Image.open(p).convert('L').save(p)
    x = MVTecAD(root, 'brick', image_size=64)[0]['image']
    assert x.shape == (3, 64, 64) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert torch.allclose(x[0] * 255, torch.from_numpy(np.asarray(Image.open(p), np.float32)))

def test_resize_and_mask_binarisation(root):
    img, mask = root/'logo'/'test'/'hole'/'000.png', root/'logo'/'ground_truth'/'hole'/'000_mask.png'
    Image.fromarray(np.full((300, 300, 3), 200, np.uint8)).save(img)
    m = np.zeros((300, 300), np.uint8); m[60:180, 30:150] = 255; m[200:203, 200:203] = 90  # a grey speck below the threshold
    Image.fromarray(m).save(mask)
    ds = MVTecAD(root, 'logo', 'test')  # default 256
    item = ds[ds.samples.index((img, mask, 'hole'))]
    assert item['image'].shape == (3, 256, 256) and item['mask'].shape == (1, 256, 256)
    assert item['image'].dtype == torch.float32 and item['mask'].dtype == torch.float32
    torch.testing.assert_close(item['image'], torch.full((3, 256, 256), 200 / 255))
    assert set(item['mask'].unique().tolist()) == {0.0, 1.0}
    assert abs(item['mask'].mean().item() - (120 * 120) / 300**2) < .01
    assert item['mask'][0, 70:150, 30:125].all() and item['label'] == 1 and item['defect'] == 'hole'

def test_mask_size_mismatch(root):
    mask = root/'logo'/'ground_truth'/'stain'/'000_mask.png'
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
    ds = MVTecAD(root, 'logo', 'test')
    with pytest.raises(GlanceSvddError, match='10x10'): ds[ds.defects.index('stain')]

def test_items_and_load_split(root):
    ds = MVTecAD(root, 'brick', 'test', image_size=32)
    assert [p for p, _, _ in ds.samples] == sorted(p for p, _, _ in ds.samples)  # sorted path order
    split = load_split(root, 'brick', 'test', image_size=32, progress=False)
    assert split['images'].shape == (len(ds), 3, 32, 32) and split['masks'].shape == (len(ds), 1, 32, 32)
    assert split['labels'].dtype == torch.int64 and split['labels'].tolist() == [int(d != 'good') for d in split['defects']]
    assert split['defects'] == ds.defects and split['paths'] == [str(p) for p, _, _ in ds.samples]
    good = split['labels'] == 0
    assert split['masks'][good].sum() == 0 and (split['masks'][~good].flatten(1).sum(1) > 0).all()
    assert 0 <= split['images'].min() and split['images'].max() <= 1

# ---------------------------------------------------------------- synthetic set

def _files(root): return {p.relative_to(root): p.read_bytes() for p in sorted(Path(root).rglob('*')) if p.is_file()}

def test_synthetic_is_deterministic(tmp_path):
    a = _files(make_synthetic_mvtec(tmp_path/'a', seed=3, **SMALL))
    b = _files(make_synthetic_mvtec(tmp_path/'b', seed=3, **SMALL))
    c = _files(make_synthetic_mvtec(tmp_path/'c', seed=4, **SMALL))
    assert a == b and len(a) == 2 * (3 + 2 + 2 * len(SYNTHETIC_DEFECTS) + 1)   # images, masks and each category's stamp
    assert a.keys() == c.keys() and any(a[k] != c[k] for k in a)

def test_synthetic_rewrite_replaces_the_folder(tmp_path):
    make_synthetic_mvtec(tmp_path, **{**SMALL, 'n_train': 5})
    make_synthetic_mvtec(tmp_path, **SMALL)
    assert len(list((tmp_path/'brick'/'train'/'good').iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ['brick', 'logo']  # no temporary folders left

def test_synthetic_masks_are_exact_in_the_files(synth):
    "Each written image differs from its defect-free source exactly where its written mask is 1"
    n = 0
    for cat in SMALL['categories']:
        for defect in SYNTHETIC_DEFECTS:
            s = synthetic_sample(cat, defect, 0, 'test', seed=0, image_size=64)
            img = np.asarray(Image.open(synth/cat/'test'/defect/'000.png'))
            mask = np.asarray(Image.open(synth/cat/'ground_truth'/defect/'000_mask.png'))
            assert np.array_equal(img, s['image']) and set(np.unique(mask)) == {0, 255}
            assert np.array_equal((img != s['clean']).any(-1), mask == 255)
            n += 1
    assert n == 2 * len(SYNTHETIC_DEFECTS)

def test_synthetic_defects_exact_over_many_seeds():
    for seed in range(8):
        for cat in SYNTHETIC_CATEGORIES:
            for defect in SYNTHETIC_DEFECTS:
                s = synthetic_sample(cat, defect, seed=seed, split='test', image_size=48)
                assert s['mask'].any() and np.array_equal((s['image'] != s['clean']).any(-1), s['mask'])

def test_synthetic_bad_names():
    with pytest.raises(GlanceSvddError, match='unknown synthetic category'): synthetic_sample('marble')
    with pytest.raises(GlanceSvddError, match='unknown synthetic defect'): synthetic_sample('brick', 'crack')

def test_default_synthetic_set_is_not_trivial(tmp_path):
    "The weak baseline (max distance to the mean training image) beats chance but is never perfect"
    root = make_synthetic_mvtec(tmp_path)
    aurocs = []
    for cat in SYNTHETIC_CATEGORIES:
        train, test = load_split(root, cat, 'train', progress=False), load_split(root, cat, 'test', progress=False)
        assert len(train['paths']) == 12 and len(test['paths']) == 4 + 2 * len(SYNTHETIC_DEFECTS)
        scores = (test['images'] - train['images'].mean(0)).abs().sum(1).flatten(1).max(1).values
        aurocs.append(roc_auc_score(test['labels'], scores))
    assert max(aurocs) < 1.0 and np.mean(aurocs) > 0.5, aurocs

# ---------------------------------------------------------------- MVTec archive extraction

def _tar(path, members):
    "A .tar.xz with {arcname: folder or bytes}"
    with tarfile.open(path, 'w:xz') as tar:
        for name, src in members.items():
            if isinstance(src, bytes):
                info = tarfile.TarInfo(name); info.size = len(src); tar.addfile(info, io.BytesIO(src))
            else: tar.add(src, arcname=name)
    return path

@pytest.fixture(scope='module')
def archive(synth, tmp_path_factory):
    "A small archive in the official layout: top-level category folders (synthetic ones renamed to MVTec names)"
    return _tar(tmp_path_factory.mktemp('arc')/'mvtec_anomaly_detection.tar.xz',
                {'bottle': synth/'logo', 'carpet': synth/'brick', 'license.txt': b'CC BY-NC-SA 4.0'})

def test_extract_local_archive(archive, tmp_path):
    out = download_mvtec(tmp_path, ['carpet'], archive=archive, sha256=sha256sum(archive), progress=False)
    assert out == tmp_path/'mvtec_ad' and sorted(p.name for p in out.iterdir()) == ['carpet']
    assert len(MVTecAD(out, 'carpet', 'test')) == 2 + len(SYNTHETIC_DEFECTS)
    download_mvtec(tmp_path, ['carpet', 'bottle'], archive=archive, sha256=None, progress=False)  # only bottle is new
    assert sorted(p.name for p in out.iterdir()) == ['bottle', 'carpet']
    assert download_mvtec(tmp_path, 'bottle', archive=tmp_path/'gone.tar.xz') == out  # present: the archive is not needed

def test_archive_in_root_is_used(archive, tmp_path):
    shutil.copy(archive, tmp_path/'mvtec_anomaly_detection.tar.xz')
    out = download_mvtec(tmp_path, ['bottle'], url='http://127.0.0.1:9/never-used', sha256=sha256sum(archive), progress=False)
    assert (out/'bottle'/'train'/'good'/'000.png').is_file()

def test_checksum_mismatch(archive, tmp_path):
    with pytest.raises(GlanceSvddError, match='SHA-256') as e: download_mvtec(tmp_path, ['bottle'], archive=archive, progress=False)
    assert 'sha256=None' in str(e.value) and not (tmp_path/'mvtec_ad'/'bottle').exists()
    assert archive.exists()  # the user's file is never deleted

def test_path_escape_is_refused(synth, tmp_path):
    evil = _tar(tmp_path/'evil.tar.xz', {'bottle': synth/'logo', 'bottle/../../escaped.txt': b'gotcha'})
    with pytest.raises(GlanceSvddError, match='unsafe member'):
        download_mvtec(tmp_path/'data', ['bottle'], archive=evil, sha256=None, progress=False)
    assert not list(tmp_path.rglob('escaped.txt')) and not (tmp_path/'data'/'mvtec_ad'/'bottle').exists()
    assert list((tmp_path/'data'/'mvtec_ad').iterdir()) == []  # the temporary folder is gone

def test_absolute_member_and_symlink_are_refused(synth, tmp_path):
    arc = tmp_path/'link.tar.xz'
    with tarfile.open(arc, 'w:xz') as tar:
        tar.add(synth/'logo', arcname='bottle')
        info = tarfile.TarInfo('bottle/train/good/evil.png'); info.type = tarfile.SYMTYPE; info.linkname = '/etc/passwd'
        tar.addfile(info)
    with pytest.raises(GlanceSvddError, match='unsafe member'):
        download_mvtec(tmp_path/'data', ['bottle'], archive=arc, sha256=None, progress=False)

def test_damaged_archive_and_missing_category(archive, tmp_path):
    bad = tmp_path/'bad.tar.xz'; bad.write_bytes(archive.read_bytes()[:2000])
    with pytest.raises(GlanceSvddError, match='cannot read the archive'):
        download_mvtec(tmp_path/'data', ['bottle'], archive=bad, sha256=None, progress=False)
    with pytest.raises(GlanceSvddError, match='has no folder for zipper'):
        download_mvtec(tmp_path/'data', ['zipper'], archive=archive, sha256=None, progress=False)
    with pytest.raises(GlanceSvddError, match='unknown MVTec AD categories'):
        download_mvtec(tmp_path/'data', ['brick'], archive=archive, sha256=None, progress=False)

def test_per_category_archive(synth, tmp_path):
    arc = _tar(tmp_path/'hazelnut.tar.xz', {'hazelnut': synth/'logo'})
    out = download_mvtec(tmp_path/'data', 'hazelnut', archive=arc, sha256=None, progress=False)
    assert len(MVTecAD(out, 'hazelnut')) == 3

# ---------------------------------------------------------------- download over HTTP (a local server)

class _Files(BaseHTTPRequestHandler):
    "Serves `data` with Range support; can cut the first answer short, ignore ranges, or answer an error"
    def do_GET(self):
        s = self.server; s.ranges.append(self.headers.get('Range'))
        if s.status: return self.send_error(s.status)
        start, rng = 0, self.headers.get('Range')
        if rng and s.honour_range:
            start = int(rng.split('=')[1].split('-')[0])
            if start >= len(s.data):
                self.send_response(416); self.send_header('Content-Range', f'bytes */{len(s.data)}'); self.end_headers(); return
            self.send_response(206); self.send_header('Content-Range', f'bytes {start}-{len(s.data) - 1}/{len(s.data)}')
        else: self.send_response(200)
        body = s.data[start:]
        self.send_header('Content-Length', str(len(body))); self.end_headers()
        if s.cut_first: s.cut_first = False; body = body[:len(body) // 3]  # the connection drops early
        self.wfile.write(body)
    def log_message(self, *args): pass

@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    "Requests to 127.0.0.1 must not go through a proxy configured on the machine"
    monkeypatch.setenv('no_proxy', '*'); monkeypatch.setenv('NO_PROXY', '*')

@pytest.fixture
def server():
    "An HTTP server on 127.0.0.1 in a thread, shut down after the test"
    srv = ThreadingHTTPServer(('127.0.0.1', 0), _Files)
    srv.data, srv.ranges, srv.status, srv.honour_range, srv.cut_first = b'', [], None, True, False
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, kwargs=dict(poll_interval=.05), daemon=True); t.start()
    srv.url = f'http://127.0.0.1:{srv.server_address[1]}/mvtec_anomaly_detection.tar.xz'
    yield srv
    srv.shutdown(); srv.server_close(); t.join(5)

def _payload(n=300_000): return np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()

def test_download_resumes_after_a_dropped_connection(server, tmp_path):
    server.data, server.cut_first = _payload(), True
    dest, sha = tmp_path/'f.bin', hashlib.sha256(_payload()).hexdigest()
    with pytest.raises(GlanceSvddError, match='run again to resume'): download_file(server.url, dest, sha, timeout=5, progress=False)
    part = tmp_path/'f.bin.part'; have = part.stat().st_size
    assert have == len(server.data) // 3 and not dest.exists()
    assert download_file(server.url, dest, sha, timeout=5, progress=False) == dest
    assert dest.read_bytes() == server.data and not part.exists()
    assert server.ranges == [None, f'bytes={have}-']  # the second request asked only for the rest

def test_download_restarts_when_range_is_ignored(server, tmp_path):
    server.data, server.honour_range = _payload(), False
    (tmp_path/'f.bin.part').write_bytes(b'stale bytes')
    download_file(server.url, tmp_path/'f.bin', hashlib.sha256(server.data).hexdigest(), timeout=5, progress=False)
    assert (tmp_path/'f.bin').read_bytes() == server.data

def test_download_of_a_complete_part_file(server, tmp_path):
    server.data = _payload()
    (tmp_path/'f.bin.part').write_bytes(server.data)  # complete, but not yet verified and renamed
    download_file(server.url, tmp_path/'f.bin', hashlib.sha256(server.data).hexdigest(), timeout=5, progress=False)
    assert (tmp_path/'f.bin').read_bytes() == server.data and server.ranges == [f'bytes={len(server.data)}-']

def test_download_checksum_mismatch_deletes_the_download(server, tmp_path):
    server.data = _payload()
    with pytest.raises(GlanceSvddError, match='SHA-256'): download_file(server.url, tmp_path/'f.bin', '0' * 64, timeout=5, progress=False)
    assert not (tmp_path/'f.bin').exists() and not (tmp_path/'f.bin.part').exists()

def test_download_http_error(server, tmp_path):
    server.status = 404
    with pytest.raises(GlanceSvddError, match='could not download') as e:
        download_mvtec(tmp_path, ['bottle'], url=server.url, progress=False)
    assert 'put it at' in str(e.value) and 'url=' in str(e.value)

def test_download_mvtec_end_to_end(server, archive, tmp_path):
    server.data = archive.read_bytes()
    out = download_mvtec(tmp_path, ['bottle', 'carpet'], url=server.url, sha256=sha256sum(archive), progress=False)
    assert sorted(p.name for p in out.iterdir()) == ['bottle', 'carpet']
    assert (tmp_path/'mvtec_anomaly_detection.tar.xz').read_bytes() == server.data  # kept for other categories

def test_unreachable_url_gives_the_offline_message(tmp_path):
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]  # closed once the block ends
    with pytest.raises(GlanceSvddError, match='could not download') as e:
        download_mvtec(tmp_path, ['bottle'], url=f'http://127.0.0.1:{port}/', progress=False)
    msg = str(e.value)
    assert str(tmp_path/'mvtec_anomaly_detection.tar.xz') in msg and 'glancesvdd download mvtec --root' in msg
    assert 'archive=' in msg and 'mvtec.com' in msg

# ---------------------------------------------------------------- CIFAR-10 one-class


def test_cifar_one_class(tmp_path):
    root = _write_cifar(tmp_path)
    tr = CIFAR10OneClass(root, 'ship', 'train', verify=False)
    assert len(tr) == 5 * 3 and set(tr.targets.tolist()) == {8} and tr.labels.sum() == 0
    te = CIFAR10OneClass(root, 8, 'test', verify=False)
    assert len(te) == 20 and te.labels.tolist() == [int(t != 8) for t in te.targets]
    item = te[1]
    assert item['image'].shape == (3, 32, 32) and item['image'].dtype == torch.float32
    assert 0 <= item['image'].min() and item['image'].max() <= 1 and (item['label'], item['target']) == (1, 1)
    raw = pickle.loads((root/'cifar-10-batches-py'/'test_batch').read_bytes())['data'][1]
    assert torch.equal((item['image'] * 255).round().to(torch.uint8), torch.from_numpy(raw.reshape(3, 32, 32)))

def test_cifar_errors(tmp_path):
    root = _write_cifar(tmp_path/'c')
    with pytest.raises(GlanceSvddError, match='md5') as e: CIFAR10OneClass(root, 0)  # verify=True: not the official files
    assert 'verify=False' in str(e.value)
    with pytest.raises(GlanceSvddError, match='airplane'): CIFAR10OneClass(root, 10, verify=False)
    with pytest.raises(GlanceSvddError, match='airplane'): CIFAR10OneClass(root, 'kitten', verify=False)
    with pytest.raises(GlanceSvddError, match="'train' or 'test'"): CIFAR10OneClass(root, 0, 'val', verify=False)
    with pytest.raises(GlanceSvddError, match='download=True') as e: CIFAR10OneClass(tmp_path/'empty', 0)
    assert 'cifar-10-python.tar.gz' in str(e.value) and 'cifar-10-batches-py' in str(e.value)
    (root/'cifar-10-batches-py'/'data_batch_3').write_bytes(b'garbage')
    with pytest.raises(GlanceSvddError, match='damaged'): CIFAR10OneClass(root, 0, verify=False)

def test_cifar_without_the_normal_class(tmp_path):
    "A reduced pickled copy without a training image of the normal class: named, not torch.stack's empty-list error"
    root = _write_cifar(tmp_path)
    for f in (root/'cifar-10-batches-py').glob('data_batch_*'):
        b = pickle.loads(f.read_bytes()); b['labels'] = [4 if l == 3 else l for l in b['labels']]; f.write_bytes(pickle.dumps(b))
    with pytest.raises(GlanceSvddError, match=f'the CIFAR-10 copy in {root} has no train image of class cat'):
        cifar10_images(root, 'cat', 'train', verify=False)
    assert len(cifar10_images(root, 'dog', 'train', verify=False)[0]) == 5 * 3

def test_cifar_from_a_local_archive(tmp_path):
    src = _write_cifar(tmp_path/'src'); root = tmp_path/'root'; root.mkdir()
    with tarfile.open(root/'cifar-10-python.tar.gz', 'w:gz') as tar: tar.add(src/'cifar-10-batches-py', arcname='cifar-10-batches-py')
    with pytest.raises(GlanceSvddError, match='official md5'): CIFAR10OneClass(root, 0)
    assert len(CIFAR10OneClass(root, 'cat', verify=False)) == 15  # extracted, then read
    assert (root/'cifar-10-batches-py'/'test_batch').is_file()
