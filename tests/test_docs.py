"`make docs` (glancesvdd.docs): a static site of executed notebooks whose widgets render offline, checked in headless Chromium"
import functools, http.server, os, re, shutil, subprocess, threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlparse

import nbformat, numpy as np, pytest
from PIL import Image

from glancesvdd.core import GlanceSvddError
from glancesvdd.cli import main
from glancesvdd.docs import build_docs

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT/'docs'   # docs/package.json: the pinned widget renderer, installed once into docs/node_modules
WIDGET_STATE = 'application/vnd.jupyter.widget-state+json'

def _write_nb(path, *cells):
    "A notebook of `cells` ('md ...' markdown, the rest code)"
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_markdown_cell(c[3:]) if c.startswith('md ') else nbformat.v4.new_code_cell(c) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True); nbformat.write(nb, path)

WIDGETS_NB = ('md # Widget demo\n\n> A slider and an image, drawn from the saved widget state.',
              'import io, numpy as np, ipywidgets as w\nfrom PIL import Image\n'
              'buf = io.BytesIO(); Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8")).save(buf, "png")\n'
              'w.VBox([w.HTML("<b>glancesvdd explorer</b> (test)"), w.IntSlider(5, description="image"), w.Image(value=buf.getvalue())])')

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "Three tiny notebooks (widgets, plain, one that raises) and an experiment template, built into a site"
    d = tmp_path_factory.mktemp('docs')
    _write_nb(d/'nbs/00_widgets.ipynb', *WIDGETS_NB)
    _write_nb(d/'nbs/01_plain.ipynb', 'md # Plain page\n\n> Only text and `print`.', '#| hide\nx = 6', 'print(x * 7)')
    _write_nb(d/'nbs/02_broken.ipynb', 'md # Broken page\n\n> It raises halfway.', 'print("first cell ran")', 'raise KeyError("missing-key")')
    _write_nb(d/'nbs/experiments/train.ipynb', 'md # A template', 'category = "bottle"')
    (d/'nbs/experiments/.notest').touch()
    results = build_docs(d/'nbs', d/'site', runs=d/'runs', assets=ASSETS, progress=False)
    return d/'site', {r['src'].stem: r for r in results}

def test_pages_and_index(site):
    out, res = site
    pages = {k: (r['status'], r['page'].as_posix()) for k, r in res.items()}
    assert pages == {'00_widgets': ('executed', '00_widgets.html'), '01_plain': ('executed', '01_plain.html'),
                    '02_broken': ('failed', '02_broken.html'), 'train': ('rendered', 'experiments/train.html')}
    index = (out/'index.html').read_text()
    for r in res.values():
        assert (out/r['page']).is_file()
        assert re.search(rf'<a href="{re.escape(r["page"].as_posix())}">{re.escape(r["title"])}</a>', index), r['title']
    assert [r['title'] for r in res.values()] == ['Widget demo', 'Plain page', 'Broken page', 'A template']
    assert 'drawn from the saved widget state.' in index   # the `> summary` line
    plain = (out/'01_plain.html').read_text()
    assert '42' in plain and 'x = 6' not in plain          # executed, `#| hide` cell not shown

def test_widget_state_embedded(site):
    html = (site[0]/'00_widgets.html').read_text()
    state = re.search(rf'<script type="{re.escape(WIDGET_STATE)}">(.*?)</script>', html, re.S)
    assert state, "no saved widget state in the page"
    models = re.findall(r'"model_name": "(\w+)"', state.group(1))
    assert {'IntSliderModel', 'ImageModel', 'HTMLModel', 'VBoxModel'} <= set(models)
    assert 'application/vnd.jupyter.widget-view+json' in html

def _script_urls(html):
    "The scripts a page loads: script tags, the widget renderer and MathJax"
    return re.findall(r'<script[^>]* src="([^"]+)"', html) + re.findall(r"var widgetRendererSrc = '([^']+)'", html)

@pytest.mark.parametrize('page, n', [('00_widgets.html', 3), ('experiments/train.html', 2)])
def test_scripts_are_local_files(site, page, n):
    "require.js, MathJax and (on pages with widgets) the widget renderer: relative URLs of files in the site"
    out = site[0]; html = (out/page).read_text()
    urls = set(_script_urls(html))
    assert len(urls) == n, urls
    for url in urls:
        assert not urlparse(url).scheme and not url.startswith('/'), f"{url} is not a relative URL"
        assert (out/page).parent.joinpath(url).resolve().is_file(), f"{url} does not exist"
    assert not re.search(r'<script[^>]+src="(https?:)?//', html)

def test_failing_notebook_reported_others_built(site):
    out, res = site
    assert res['02_broken']['error'] == "KeyError: 'missing-key'"
    assert all(r['error'] is None for k, r in res.items() if k != '02_broken')
    index = (out/'index.html').read_text()
    assert re.search(r'<li class="failed"><a href="02_broken.html">Broken page</a>', index)
    assert "KeyError: &#39;missing-key&#39;" in index and '1 failed (02_broken.ipynb)' in index
    page = (out/'02_broken.html').read_text()
    assert 'first cell ran' in page and 'missing-key' in page and 'failed: KeyError' in page

def test_cli_docs(tmp_path, capsys):
    _write_nb(tmp_path/'nbs/00_a.ipynb', 'md # A', 'print(1)')
    _write_nb(tmp_path/'runs/demo/svdd/brick/seed0/train.ipynb', 'md # A run copy')
    assert main(['docs', '--nbs', str(tmp_path/'nbs'), '--out', str(tmp_path/'site'), '--runs', str(tmp_path/'runs'), '--no-execute']) == 0
    assert '2 of 2 pages built' in capsys.readouterr().out
    assert (tmp_path/'site/runs/demo/svdd/brick/seed0/train.html').is_file()
    assert main(['docs', '--nbs', str(tmp_path/'nbs'), '--notebooks', '00_b']) == 2
    assert 'no notebook 00_b' in capsys.readouterr().err

def test_missing_npm_is_a_clear_error(tmp_path, monkeypatch):
    _write_nb(tmp_path/'nbs/00_a.ipynb', 'print(1)')
    shutil.copy(ASSETS/'package.json', tmp_path/'package.json')   # nothing installed there yet
    monkeypatch.setenv('PATH', '')
    with pytest.raises(GlanceSvddError, match='install them'): build_docs(tmp_path/'nbs', tmp_path/'site', assets=tmp_path)
    assert not (tmp_path/'site'/'00_a.html').exists()   # fails before executing anything

# --- in a real browser -------------------------------------------------------------------------------

def _chromium()->str:
    "Debian's chromium, installed with apt-get when absent"
    exe = shutil.which('chromium') or ('/usr/bin/chromium' if Path('/usr/bin/chromium').exists() else None)
    if exe: return exe
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    r = subprocess.run('apt-get update && apt-get install -y chromium', shell=True, capture_output=True, text=True, env=env, timeout=1200)
    if r.returncode or not Path('/usr/bin/chromium').exists():
        pytest.fail(f"this test needs Debian's chromium; `apt-get update && apt-get install -y chromium` failed "
                    f"(exit {r.returncode}; it needs root and the Debian mirror):\n{(r.stderr or r.stdout)[-2000:]}")
    return '/usr/bin/chromium'

class _Widgets(HTMLParser):
    "Text and <img> tags inside rendered widgets (elements whose class names a widget) of a DOM dump"
    VOID = {'area', 'base', 'br', 'col', 'embed', 'hr', 'img', 'input', 'link', 'meta', 'source', 'track', 'wbr'}
    def __init__(self):
        super().__init__(); self.stack, self.n_widgets, self.images, self.text = [], 0, 0, []
    def handle_starttag(self, tag, attrs):
        cls = dict(attrs).get('class') or ''
        is_widget = 'jupyter-widgets' in cls or 'widget-' in cls
        self.n_widgets += is_widget
        if tag == 'img' and (is_widget or any(self.stack)): self.images += 1
        if tag not in self.VOID: self.stack.append(is_widget)
    def handle_endtag(self, tag):
        if tag not in self.VOID and self.stack: self.stack.pop()
    def handle_data(self, data):
        if any(self.stack): self.text.append(data)

@pytest.fixture
def served(tmp_path):
    "Serve a folder on 127.0.0.1 (a free port) in a thread; yields (start(folder) -> base URL, request log)"
    log, servers = [], []
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args): log.append((self.path, args[1] if len(args) > 1 else ''))
    def start(folder):
        srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Handler, directory=str(folder)))
        threading.Thread(target=srv.serve_forever, daemon=True).start(); servers.append(srv)
        return f'http://127.0.0.1:{srv.server_address[1]}/'
    yield start, log
    for srv in servers: srv.shutdown(); srv.server_close()

SHOT = """<!DOCTYPE html><html><body style="margin: 0">
<iframe id="page" src="{page}" style="width: 100%; height: 100vh; border: 0"></iframe>
<script>
// headless Chromium's --screenshot shows the top of a page: scroll the framed page to its first rendered widget
const frame = document.getElementById('page');
function toWidget() {{
  const w = frame.contentDocument.querySelector('.lm-Widget.jupyter-widgets');
  if (w) w.scrollIntoView(); else setTimeout(toWidget, 200);
}}
frame.addEventListener('load', () => setTimeout(toWidget, 200));
</script></body></html>"""

def _browse(base, page, out, tmp_path):
    "The DOM of `page` after its scripts ran, and a screenshot scrolled to its first widget, from headless Chromium"
    exe = _chromium()
    flags = [exe, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
             '--disable-component-update', '--disable-sync', f'--user-data-dir={tmp_path/"chromium"}', '--virtual-time-budget=15000']
    dom = subprocess.run(flags + ['--dump-dom', urljoin(base, page)], capture_output=True, text=True, timeout=300)
    assert dom.returncode == 0, dom.stderr[-2000:]
    (out/'_shot.html').write_text(SHOT.format(page=page))
    png = tmp_path/'page.png'
    shot = subprocess.run(flags + [f'--screenshot={png}', '--window-size=1400,1800', urljoin(base, '_shot.html')],
                          capture_output=True, text=True, timeout=300)
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    return dom.stdout, png

@pytest.mark.slow
def test_explorer_renders_in_chromium(tmp_path, served):
    "The executed 40_viz page, served over HTTP, shows the explorer drawn from its widget state, every file from the site"
    out = tmp_path/'site'
    res = build_docs(ROOT/'nbs', out, notebooks=['index', '40_viz'], assets=ASSETS, progress=False)
    assert [(r['page'].as_posix(), r['status'], r['error']) for r in res] == [('readme.html', 'executed', None), ('40_viz.html', 'executed', None)]
    assert WIDGET_STATE in (out/'40_viz.html').read_text()
    start, log = served
    dom, png = _browse(start(out), '40_viz.html', out, tmp_path)
    w = _Widgets(); w.feed(dom)
    assert w.n_widgets > 0, "no widget was rendered"
    assert 'glancesvdd explorer' in ''.join(w.text), "the explorer's title is not inside a rendered widget"
    assert w.images > 0, "no <img> inside the widget area"
    assert 'Error displaying widget' not in dom
    failed = [(path, code) for path, code in log if code != '200' and code != '304' and path != '/favicon.ico']
    assert not failed, f"requests that failed: {failed}"
    assert any(path.startswith('/_static/@jupyter-widgets/') for path, _ in log), "the widget renderer was not loaded from the site"
    pixels = np.asarray(Image.open(png).convert('RGB'), dtype=np.float32)
    assert pixels.std() > 10, "the screenshot is blank"
    colourful = (pixels.max(-1) - pixels.min(-1) > 60).mean()   # the explorer's images and maps: ~10%; a page of code: ~1%
    assert colourful > 0.03, f"the screenshot shows no pictures ({colourful:.1%} colourful pixels)"
