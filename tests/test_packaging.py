"""Issue 24: the dependencies have one source, settings.ini (`requirements` for the library, `dev_requirements` for the tests and
the notebooks' tooling, each a compatible range); requirements.txt is the lock of the venv `make` builds and agrees with it; every
package the library imports is declared; the wheel's metadata says only what is true."""
import ast, email, sys, zipfile
from configparser import ConfigParser
from importlib.metadata import packages_distributions, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from test_wheel import ROOT, build_wheel

BROUGHT = {'jinja2': 'nbconvert', 'traitlets': 'jupyter_client', 'zmq': 'jupyter_client',   # imported, and a dependency of the
           'triton': 'torch'}                                                               # named requirement by definition

def declared(key:str)->list:
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini', encoding='utf-8')
    return [Requirement(r) for r in cfg['DEFAULT'][key].split()]

def names(reqs)->set: return {canonicalize_name(r.name) for r in reqs}

def lock()->dict:
    "requirements.txt: canonical name -> the pinned version"
    pins = {}
    for line in (ROOT/'requirements.txt').read_text().splitlines():
        if line := line.split('#')[0].strip():
            r = Requirement(line); (spec,) = r.specifier
            assert spec.operator == '==', f"requirements.txt pins exact versions, not {line!r}"
            pins[canonicalize_name(r.name)] = spec.version
    return pins

def test_the_lock_pins_every_declared_requirement_within_its_range():
    pins, reqs = lock(), declared('requirements') + declared('dev_requirements')
    assert set(pins) == names(reqs), set(pins) ^ names(reqs)
    for r in reqs: assert r.specifier.contains(pins[canonicalize_name(r.name)]), (str(r), pins[canonicalize_name(r.name)])

def test_the_venv_is_the_lock():
    assert {n: version(n) for n in lock()} == lock()

def _imports(f:Path)->set:
    tree = ast.parse(f.read_text())
    return ({a.name.split('.')[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} |
            {n.module.split('.')[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level})

def test_every_import_is_declared():
    "What the library imports is a declared requirement; nbdev (dev) only in docs.py, whose `glancesvdd docs` renders a checkout's notebooks"
    dists, runtime, dev = packages_distributions(), names(declared('requirements')), names(declared('dev_requirements'))
    assert {'fastcore', 'ipykernel'} <= runtime   # the command's Param and viz's patch; the kernels papermill starts
    for f in sorted((ROOT/'glancesvdd').rglob('*.py')):
        for mod in sorted(_imports(f) - set(sys.stdlib_module_names) - {'glancesvdd', '__future__'} - set(BROUGHT)):
            allowed = runtime | (dev if f.name == 'docs.py' else set())
            assert names(Requirement(d) for d in dists.get(mod, [mod])) & allowed, f"{f.relative_to(ROOT)} imports {mod}, not declared"

def test_wheel_metadata(tmp_path):
    wheel = zipfile.ZipFile(build_wheel(tmp_path))
    meta = email.message_from_string(wheel.read(next(n for n in wheel.namelist() if n.endswith('.dist-info/METADATA'))).decode())
    requires = [Requirement(r) for r in meta.get_all('Requires-Dist')]
    assert {str(r) for r in requires if not r.marker} == {str(r) for r in declared('requirements')}
    assert {str(r) for r in requires if r.marker} == {f'{r}; extra == "dev"' for r in declared('dev_requirements')}
    assert {'Programming Language :: Python :: 3.11', 'Programming Language :: Python :: 3.12'} <= set(meta.get_all('Classifier'))
    text = str(meta)
    assert not [w for w in ('example.org', 'github.com/glancesvdd', 'github.io') if w in text]   # no invented address or URL
