"""Issue 15: the notebooks as people use them, in JupyterLab with a live kernel, driven in a real browser.

A `jupyter lab` server (127.0.0.1, a free port, a temporary root, no token, no browser) and Debian's headless Chromium, driven by
Selenium through Debian's chromedriver. The experiment notebooks run in the lab on a small synthetic set (smoke sizes) and write
real runs; `explore()` on those runs is then moved through the page (threshold slider, image slider, method selector) and each
redraw is checked against `segmentation_stats`. Every notebook of nbs/ runs in the lab too, with the cells `nbdev_test` skips left
out. Screenshots go to the test's temporary folder; `make screenshot` writes the README's picture of the explorer.
"""
import json, math, os, shutil, signal, socket, subprocess, sys, time, urllib.request
from io import BytesIO
from pathlib import Path

import nbformat, numpy as np, pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCREENSHOT_ENV = 'GLANCESVDD_SCREENSHOT'   # `make screenshot`: where to write the README's picture of the explorer
INSTALL = ("install Debian's browser and driver (as root: `apt-get update && apt-get install -y chromium chromium-driver`; "
           ".ci/run does this) and selenium (`.venv/bin/pip install -r requirements.txt`)")
FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--window-size=1400,1600')
WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'
pytestmark = pytest.mark.slow

REQUIRE = os.environ.get('GLANCESVDD_REQUIRE_BROWSER') == '1'   # set by .ci/run: there a missing browser is a failure, not a skip

def _missing(why):
    if REQUIRE: pytest.fail(f"{why}, and GLANCESVDD_REQUIRE_BROWSER=1 asks for the live test: {INSTALL}")
    pytest.skip(f"{why}: {INSTALL}")

def _browser_paths():
    "Debian's chromium and chromedriver, and selenium; or skip saying how to install them (fail where they are required)"
    exe = shutil.which('chromium') or shutil.which('chromium-browser')
    driver = shutil.which('chromedriver') or ('/usr/bin/chromedriver' if Path('/usr/bin/chromedriver').exists() else None)
    if not (exe and driver): _missing("no chromium or chromedriver on this machine")
    try: import selenium  # noqa: F401
    except ImportError: _missing("selenium is not installed")
    return exe, driver

def _free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _wait(what:str, check, timeout:float, every:float=0.5):
    "Poll `check()` until it returns something truthy; fail naming `what` after `timeout` seconds"
    t0 = time.time()
    while True:
        r = check()
        if r: return r
        if time.time() - t0 > timeout: pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)

# --- the server and the browser -------------------------------------------------------------------------

LAB_SETTINGS = {   # no news or update checks (nothing outside loopback), every cell in the DOM, kernels stopped with their tab
    '@jupyterlab/apputils-extension/notification.jupyterlab-settings': dict(fetchNews='false', checkForUpdates=False),
    '@jupyterlab/notebook-extension/tracker.jupyterlab-settings': dict(windowingMode='none', kernelShutdown=True)}

class Lab:
    "`jupyter lab` on 127.0.0.1 serving `root`, with its own config, settings and workspaces under `home`"
    def __init__(self, root:Path, home:Path):
        self.root, self.home, self.port = root, home, _free_port()
        self.url, self.log = f'http://127.0.0.1:{self.port}', home/'lab.log'
        for rel, value in LAB_SETTINGS.items():
            (home/'settings'/rel).parent.mkdir(parents=True, exist_ok=True); (home/'settings'/rel).write_text(json.dumps(value))
        env = {k: v for k, v in os.environ.items() if k not in ('MPLBACKEND', 'JPY_SESSION_NAME')}   # the kernel's inline backend, as people get it
        env.update(JUPYTER_CONFIG_DIR=str(home/'config'), JUPYTER_RUNTIME_DIR=str(home/'runtime'), IPYTHONDIR=str(home/'ipython'),
                   PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", IN_TEST='1')   # IN_TEST: as nbdev_test runs the notebooks
        cmd = [str(BIN/'jupyter'), 'lab', '--allow-root', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={self.port}',
               '--ServerApp.port_retries=0', "--IdentityProvider.token=", f'--ServerApp.root_dir={root}',
               f'--LabApp.user_settings_dir={home/"settings"}', f'--LabApp.workspaces_dir={home/"workspaces"}',
               '--LabApp.expose_app_in_browser=True']   # window.jupyterapp: the test reads cells' state from it, never acts through it
        self._out = open(self.log, 'w')
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        try: _wait('the JupyterLab server to answer', self._up, 240)
        except BaseException: self.stop(); raise

    def _up(self):
        if self.proc.poll() is not None: pytest.fail(f"jupyter lab exited ({self.proc.returncode}):\n{self.log_tail()}")
        try: return urllib.request.urlopen(self.url + '/api/status', timeout=5).status == 200
        except OSError: return False

    def log_tail(self, n=3000): return self.log.read_text(errors='replace')[-n:]

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)   # its own process group: the server and its kernels
            try: self.proc.wait(30)
            except subprocess.TimeoutExpired: os.killpg(self.proc.pid, signal.SIGKILL); self.proc.wait(10)
        self._out.close()

def _chrome(home:Path):
    "Headless Chromium through Debian's chromedriver (Selenium Manager is told to stay offline and never asked for a driver)"
    exe, driver = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    os.environ['SE_OFFLINE'] = 'true'
    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for f in FLAGS + (f'--user-data-dir={home/"chromium"}',): opts.add_argument(f)
    d = webdriver.Chrome(service=Service(executable_path=driver, log_output=str(home/'chromedriver.log')), options=opts)
    d.set_script_timeout(120)
    return d

# --- notebooks in the page ----------------------------------------------------------------------------

STATE_JS = """
const [path] = arguments, app = window.jupyterapp;
if (!app) return null;
let panel = null;
for (const w of app.shell.widgets('main')) if (w.context && w.context.path === path) panel = w;
if (!panel || !panel.context.isReady || !panel.sessionContext.session) return {ready: false};
const cells = panel.content.widgets.map(c => {
  const m = c.model, r = {type: m.type};
  if (m.type !== 'code') return r;
  r.count = m.executionCount; r.prompt = c.inputArea && c.inputArea.promptNode ? c.inputArea.promptNode.textContent : '';
  r.errors = []; r.widgets = 0;
  for (let i = 0; i < m.outputs.length; i++) {
    const o = m.outputs.get(i).toJSON();
    if (o.output_type === 'error') r.errors.push(o.ename + ': ' + o.evalue);
    if (o.data && o.data['%s']) r.widgets++;
  }
  // a widget output renders as an output element whose first child is the widget's view
  const outs = c.outputArea ? [...c.outputArea.node.querySelectorAll('.jp-OutputArea-output')] : [];
  r.views = outs.filter(e => e.firstElementChild && e.firstElementChild.classList.contains('jupyter-widgets')).length;
  r.broken = outs.map(e => e.textContent).filter(t => /Error displaying widget|Loading widget/.test(t)).map(t => t.slice(0, 300));
  return r;
});
return {ready: true, status: panel.sessionContext.kernelDisplayStatus, cells};
""" % WIDGET_VIEW

SAVE_CLOSE_JS = """
const [path, done] = [arguments[0], arguments[arguments.length - 1]];
for (const w of window.jupyterapp.shell.widgets('main'))
  if (w.context && w.context.path === path) { w.context.save().then(() => { w.close(); done(true); }, e => done(String(e))); return; }
done('not open');
"""

def _state(d, path): return d.execute_script(STATE_JS, path)

def _menu(d, top:str, item:str):
    "Choose `top` > `item` in JupyterLab's menu bar, with the mouse"
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    d.find_element(By.XPATH, f"//li[contains(@class,'lm-MenuBar-item')][.//*[normalize-space()='{top}']]").click()
    WebDriverWait(d, 20).until(EC.element_to_be_clickable(
        (By.XPATH, f"//li[contains(@class,'lm-Menu-item')][.//div[contains(@class,'lm-Menu-itemLabel') and normalize-space()='{item}']]"))).click()

CLEAN_JS = "if (window.jupyterapp) for (const w of jupyterapp.shell.widgets('main')) if (w.context) w.context.model.dirty = false;"

def open_notebook(d, lab:Lab, path:str, timeout=240):
    "Open `path` (relative to the lab's root) at its URL and wait until its kernel is idle"
    d.execute_script(CLEAN_JS)   # a notebook left open by a failed step: no 'leave the page?' prompt
    d.get(f'{lab.url}/lab/tree/{path}?reset')   # ?reset: a fresh workspace, only this notebook open
    def ready():
        s = _state(d, path)
        return s and s['ready'] and s['status'] == 'idle'
    _wait(f'{path} to open with an idle kernel', ready, timeout)

def run_all(d, path:str, timeout:float)->dict:
    "Run > Run All Cells, then wait until no cell is running or queued; the notebook's state (cells, widget views)"
    _menu(d, 'Run', 'Run All Cells')
    def done():
        s = _state(d, path)
        if not (s and s['ready']): return None
        code = [c for c in s['cells'] if c['type'] == 'code']
        busy = s['status'] != 'idle' or any('*' in c['prompt'] for c in code)
        # a notebook of prose alone (index.ipynb) has nothing to run: idle is done
        return None if busy or (code and not any(c['count'] for c in code)) else s
    _wait(f'{path} to finish running', lambda: done() and (time.sleep(1.5) or done()), timeout, every=1)
    return _state(d, path)

def problems(state:dict)->list:
    "Errors, cells that did not run, and widget outputs that did not render"
    out = [f"cell {i}: {e}" for i, c in enumerate(state['cells']) for e in c.get('errors', [])]
    out += [f"cell {i} did not run" for i, c in enumerate(state['cells']) if c['type'] == 'code' and not c['count']]
    out += [f"cell {i}: {c['widgets']} widget outputs, {c['views']} rendered" for i, c in enumerate(state['cells'])
            if c['type'] == 'code' and c['views'] < c['widgets']]
    out += [f"cell {i}: a widget did not render: {t!r}" for i, c in enumerate(state['cells']) for t in c.get('broken', [])]
    return out

def save_and_close(d, path:str):
    "Save the executed notebook (it stays in the temporary root) and close its tab, which stops its kernel"
    r = d.execute_async_script(SAVE_CLOSE_JS, path)
    assert r is True, f"could not save and close {path}: {r}"

def run_in_lab(d, lab:Lab, path:str, timeout:float, shots:Path|None=None)->dict:
    "Open, run all, screenshot, save and close `path`; its state, with the seconds it took and its problems"
    t0 = time.time()
    open_notebook(d, lab, path)
    state = run_all(d, path, timeout)
    if shots: shots.mkdir(parents=True, exist_ok=True); d.save_screenshot(str(shots/(path.replace('/', '__') + '.png')))
    save_and_close(d, path)
    return dict(state, seconds=round(time.time() - t0, 1), problems=problems(state))

# --- fixtures ------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server over a temporary root, stopped (with its kernels) however the tests end"
    _browser_paths()
    server = Lab(tmp_path_factory.mktemp('lab_root'), tmp_path_factory.mktemp('lab_home'))
    try: yield server
    finally: server.stop()

@pytest.fixture(scope='module')
def browser(lab):
    "Headless Chromium, closed however the tests end"
    d = _chrome(lab.home)
    try: yield d
    finally: d.quit()

def _write_nb(path:Path, *cells):
    "A notebook of `cells` ('md ...' markdown, the rest code)"
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3 (ipykernel)', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_markdown_cell(c[3:]) if c.startswith('md ') else nbformat.v4.new_code_cell(c) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True); nbformat.write(nb, path)

# The experiment notebooks, each with the parameters papermill would inject: both methods trained and evaluated on one synthetic
# category at smoke sizes (their runs are what the explorer shows), the report notebooks on those runs, CIFAR-10 on a tiny copy.
CATEGORY = 'brick'
def _experiments(work:Path)->list:
    mvtec = dict(category=CATEGORY, data_root=str(work/'data'), runs_root=str(work/'runs'), smoke=True)
    untrained = dict(teacher_weights='untrained', imagenet_dir='skip')   # no ImageNet weights or images here: both asked for explicitly
    glance = dict(mvtec, method='glance', config=untrained)
    return [('train_svdd', 'train_svdd', dict(mvtec, method='svdd')), ('evaluate', 'evaluate_svdd', dict(mvtec, method='svdd')),
            ('train_glance', 'train_glance', glance), ('evaluate', 'evaluate_glance', glance),
            ('figures', 'figures', dict(runs_root=str(work/'runs'), out=str(work/'figures'))),
            ('tables', 'tables', dict(runs_root=str(work/'runs'), out=str(work/'tables'))),
            ('cifar10', 'cifar10', dict(category='cat', data_root=str(work/'cifar'), runs_root=str(work/'runs_cifar'), smoke=True,
                                        cifar_verify=False, config=untrained)),
            ('evaluate_release', 'evaluate_release', dict(category='wood', data_root=str(work/'release_data'),   # tests/fixtures' wood encoder
                                                          runs_root=str(work/'runs_release'), release_dir=str(work/'release')))]

def _parameterized(src:Path, dst:Path, params:dict):
    "`src` with a cell of `params` after its `parameters` cell, as papermill injects it"
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook
    nb = parameterize_notebook(load_notebook_node(str(src)), params)
    dst.parent.mkdir(parents=True, exist_ok=True); nbformat.write(nb, dst)

@pytest.fixture(scope='module')
def experiments(lab, browser):
    "The experiment notebooks run in the lab, in order; their states by copy name, and the folder holding data and runs"
    from cifar_format import write_cifar
    from selenium.common.exceptions import WebDriverException
    from glancesvdd.data import make_synthetic_mvtec
    from glancesvdd.svdd.release import release_checkpoint
    work = lab.root/'work'
    make_synthetic_mvtec(work/'data', categories=(CATEGORY,), n_train=6, n_test_good=2, n_test_defect=1)
    write_cifar(work/'cifar', n_train=4, n_test=2)
    make_synthetic_mvtec(work/'release_data', categories=(CATEGORY,), n_train=3, n_test_good=1, n_test_defect=1, defects=('stain', 'scratch'))
    (work/'release_data'/CATEGORY).rename(work/'release_data'/'wood')   # a category the release has an encoder for
    release_checkpoint(work/'release', 'wood').parent.mkdir(parents=True)
    shutil.copy(ROOT/'tests'/'fixtures'/'patchsvdd_official'/'wood_enchier.pkl', release_checkpoint(work/'release', 'wood'))
    states = {}
    for nb, name, params in _experiments(work):
        rel = f'experiments/{name}.ipynb'
        if not (ROOT/'nbs'/'experiments'/f'{nb}.ipynb').exists(): states[name] = dict(seconds=None, problems=['no such notebook']); continue
        _parameterized(ROOT/'nbs'/'experiments'/f'{nb}.ipynb', lab.root/rel, params)
        try: states[name] = run_in_lab(browser, lab, rel, timeout=900, shots=lab.home/'shots')
        except (pytest.fail.Exception, AssertionError, WebDriverException) as e: states[name] = dict(seconds=None, problems=[str(e)])   # the next ones still run
    return dict(work=work, runs=work/'runs', states=states)

def test_every_experiment_notebook_is_run():
    "A new experiment notebook needs its smoke-size parameters in `_experiments` to be run here"
    have, run = {p.stem for p in (ROOT/'nbs'/'experiments').glob('*.ipynb')}, {nb for nb, _, _ in _experiments(Path('.'))}
    assert have == run, f"not run in the lab: {sorted(have - run)}; gone from nbs/experiments: {sorted(run - have)}"

@pytest.mark.parametrize('name', [n for _, n, _ in _experiments(Path('.'))])
def test_experiment_notebook_runs_in_lab(experiments, name):
    s = experiments['states'][name]
    assert not s['problems'], f"experiments/{name}.ipynb in JupyterLab ({s['seconds']} s): {s['problems']}"

# --- the explorer, moved through the page -------------------------------------------------------------

EXPLORER_JS = """
const ex = [...document.querySelectorAll('.widget-vbox')].find(e => e.firstElementChild && e.firstElementChild.textContent.startsWith('glancesvdd explorer'));
if (!ex) return null;
const info = [...ex.querySelectorAll('.widget-html')].find(e => [...e.querySelectorAll('th')].some(t => t.textContent.trim() === 'IoU'));
const img = ex.querySelector('img.widget-image');
const slider = label => [...ex.querySelectorAll('.widget-slider')].find(e => e.querySelector('label') && e.querySelector('label').textContent.trim() === label);
const readout = label => { const s = slider(label); return s ? s.querySelector('.widget-readout').textContent.trim() : null; };
return {caption: info ? info.querySelector('b').parentNode.textContent.split('run')[0].trim() : null,
        rows: info ? [...info.querySelectorAll('tr')].map(tr => [...tr.children].map(c => c.textContent.trim())) : [],
        src: img ? img.src : null, loaded: !!img && img.complete && img.naturalWidth > 0,
        threshold: readout('threshold (fraction of range)'), image: readout('image'),
        method: ([...ex.querySelectorAll('.widget-dropdown')].find(e => e.querySelector('label').textContent.trim() === 'method')
                 .querySelector('select') || {}).value};
"""

def _fmt(v)->str:
    "A number as the explorer prints it: 3 significant digits, '—' when undefined"
    return '—' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.3g}'

def _expected_rows(scores:dict, methods, t:float, i:int)->list:
    "The explorer's table for image `i` at threshold fraction `t`, computed here from scores.npz and `segmentation_stats`"
    from glancesvdd.viz import segmentation_stats
    rows = [['run', 'image score', 'threshold', 'IoU', 'region overlap', 'false-positive rate']]
    mask = scores[methods[0]]['masks'][i]   # one ground truth for the runs shown (they scored the same images)
    for m in methods:
        s = scores[m]; lo, hi = float(s['maps'].min()), float(s['maps'].max())
        thr = lo + t * (hi - lo)
        st = segmentation_stats(s['maps'][i], mask, thr)
        rows.append([m, _fmt(float(s['image_scores'][i])), _fmt(thr), _fmt(st['iou']), _fmt(st['pro']), _fmt(st['fpr'])])
    return rows

class ExplorerPage:
    "The explorer's output in the page: its controls, moved with the mouse and keyboard, and what it shows"
    def __init__(self, d, shots:Path):
        self.d, self.shots, self.n = d, shots, 0
        self.view = _wait('the explorer to render in the page', lambda: (v := self.read()) and v['loaded'] and v['rows'] and v, 120)
        self.pixels = self.shot('start')

    def read(self): return self.d.execute_script(EXPLORER_JS)

    def element(self, xpath:str):
        from selenium.webdriver.common.by import By
        box = "//div[contains(@class,'widget-vbox')][./*[1][starts-with(normalize-space(), 'glancesvdd explorer')]]"
        return self.d.find_element(By.XPATH, box + xpath)

    def slider_handle(self, label:str):
        return self.element(f"//div[contains(@class,'widget-slider')][.//label[normalize-space()='{label}']]//*[contains(@class,'noUi-handle')]")

    def shot(self, name:str)->np.ndarray:
        "Screenshot of the main picture (maps and segmentations) as it shows in the page, saved under the test's folder"
        png = self.element("//img[contains(@class,'widget-image')][1]").screenshot_as_png
        self.n += 1; self.shots.mkdir(parents=True, exist_ok=True)
        (self.shots/f'{self.n:02d}_{name}.png').write_bytes(png)
        return np.asarray(Image.open(BytesIO(png)).convert('RGB'), dtype=np.int16)

    def moved(self, what:str, want_rows)->dict:
        "After a move: wait for the table `want_rows(view)` and a new picture; assert the picture on the screen changed"
        before = self.view['src']
        def redrawn():
            v = self.read()
            return v if v and v['src'] != before and v['loaded'] and v['rows'] == want_rows(v) else None
        t0 = time.time()
        try: self.view = _wait(f'the explorer to redraw after {what}', redrawn, 120)
        except pytest.fail.Exception:
            v = self.read(); pytest.fail(f"after {what} the explorer shows {v and v['rows']} (picture {'new' if v and v['src'] != before else 'unchanged'}), "
                                         f"expected {want_rows(v) if v else '?'}")
        time.sleep(0.3)   # the new picture decoded and painted
        pixels = self.shot(what.replace(' ', '_'))
        assert pixels.shape != self.pixels.shape or np.abs(pixels - self.pixels).max() > 0, f"the picture on the screen did not change after {what}"
        self.pixels = pixels
        return dict(self.view, seconds=round(time.time() - t0, 2))

def test_explorer_live(lab, browser, experiments, tmp_path):
    "explore() in JupyterLab: threshold slider, image slider, method selector moved through the page; each redraw checked"
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    from glancesvdd.runs import load_scores
    runs, d = experiments['runs'], browser
    for name in ('train_svdd', 'evaluate_svdd', 'train_glance', 'evaluate_glance'):
        assert not experiments['states'][name]['problems'], f"no runs to explore: experiments/{name}.ipynb failed in the lab"
    scores = {m: load_scores(runs/m/CATEGORY/'seed0') for m in ('glance', 'svdd')}
    _write_nb(lab.root/'explore.ipynb', 'md # The explorer, live', f'from glancesvdd.viz import explore\nexplore(r"{runs}")')
    open_notebook(d, lab, 'explore.ipynb')
    state = run_all(d, 'explore.ipynb', 300)
    assert not problems(state), problems(state)
    page = ExplorerPage(d, tmp_path/'shots')
    v = page.view
    assert (v["method"], v["image"], v["threshold"]) == ("glance", "0", "0.50"), v
    assert v['rows'] == _expected_rows(scores, ['glance'], 0.5, 0), "the first drawing does not match segmentation_stats"
    assert v['caption'].endswith('image 0 of the test set)'), v['caption']

    # threshold: dragged with the mouse; the value it lands on is read from the slider's readout
    ActionChains(d).click_and_hold(page.slider_handle('threshold (fraction of range)')).move_by_offset(60, 0).release().perform()
    v = page.moved('threshold dragged', lambda v: _expected_rows(scores, ['glance'], float(v['threshold']), 0))
    t = float(v['threshold']); assert t > 0.5, v['threshold']

    # image: the slider's handle, one step to the right with the keyboard
    page.slider_handle('image').send_keys(Keys.ARROW_RIGHT)
    v = page.moved('image slider', lambda v: _expected_rows(scores, ['glance'], t, 1))
    assert v['image'] == '1' and v['caption'].endswith('image 1 of the test set)'), v

    # method: one method, then side by side (a new choice of runs starts again at the first image: 40_viz, `_on_selection`)
    select = lambda: Select(page.element("//div[contains(@class,'widget-dropdown')][.//label[normalize-space()='method']]//select"))
    select().select_by_visible_text('svdd')
    v = page.moved('method svdd', lambda v: _expected_rows(scores, ['svdd'], t, 0))
    assert (v['method'], v['image']) == ('svdd', '0'), v
    aspect = lambda: page.pixels.shape[1] / page.pixels.shape[0]
    one = aspect()
    select().select_by_visible_text('side by side')
    page.moved('side by side', lambda v: _expected_rows(scores, ['glance', 'svdd'], t, 0))
    assert aspect() > 1.4 * one, "side by side: the picture should hold both methods' maps"

    # side by side: the image and the threshold again, both runs' numbers follow
    page.slider_handle('image').send_keys(Keys.ARROW_RIGHT)
    page.moved('image slider side by side', lambda v: _expected_rows(scores, ['glance', 'svdd'], t, 1))
    defect = lambda: Select(page.element("//div[contains(@class,'widget-dropdown')][.//label[normalize-space()='defect']]//select"))
    defect().select_by_visible_text('paste')   # the filter keeps the pasted-patch images; the first of them is shown
    i = int(np.flatnonzero(scores['glance']['defects'] == 'paste')[0])
    v = page.moved('defect filter', lambda v: _expected_rows(scores, ['glance', 'svdd'], t, i))
    assert v['caption'].endswith(f'(paste, image {i} of the test set)'), v['caption']
    ActionChains(d).click_and_hold(page.slider_handle('threshold (fraction of range)')).move_by_offset(-90, 0).release().perform()
    v = page.moved('threshold side by side', lambda v: _expected_rows(scores, ['glance', 'svdd'], float(v['threshold']), i))
    assert float(v['threshold']) < t, v
    explorer = page.element('')
    if os.environ.get(SCREENSHOT_ENV):   # `make screenshot`: the README's picture, as this test renders it
        Path(os.environ[SCREENSHOT_ENV]).write_bytes(explorer.screenshot_as_png)
    explorer.screenshot(str(tmp_path/'shots'/'explorer.png'))
    save_and_close(d, 'explore.ipynb')

# --- every library notebook -------------------------------------------------------------------------------

LIBRARY = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith('_'))

@pytest.fixture(scope='module')
def library(lab):
    "nbs/ copied into the lab's root as nbdev_test runs it: the cells it skips (`skip_cell`, 55_docs) become raw cells"
    from glancesvdd.docs import skip_cell
    dst = lab.root/'nbs'
    shutil.copytree(ROOT/'nbs', dst, ignore=shutil.ignore_patterns('_*', '.ipynb_checkpoints', 'experiments', '*.ipynb'))
    for name in LIBRARY:
        nb = nbformat.read(ROOT/'nbs'/name, as_version=4)
        nb.cells = [nbformat.v4.new_raw_cell(c.source, metadata=c.metadata) if c.cell_type == 'code' and skip_cell(c) else c for c in nb.cells]
        nbformat.write(nb, dst/name)
    for entry in ROOT.iterdir():   # what the notebooks reach by relative paths (../tests/fixtures, ../docs, ...): the project's own
        if not entry.name.startswith('.') and entry.name != 'nbs' and not (lab.root/entry.name).exists(): (lab.root/entry.name).symlink_to(entry)
    return dst

@pytest.mark.parametrize('name', LIBRARY)
def test_library_notebook_runs_in_lab(lab, browser, library, name):
    s = run_in_lab(browser, lab, f'nbs/{name}', timeout=900, shots=lab.home/'shots')
    assert not s['problems'], f"nbs/{name} in JupyterLab ({s['seconds']} s): {s['problems']}"
