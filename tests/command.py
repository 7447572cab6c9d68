"The installed `glancesvdd` command, run as a user runs it, for the tests that go through the command line."
import signal, subprocess, sys
from pathlib import Path

BIN = Path(sys.executable).parent   # the venv's bin: glancesvdd, papermill

def run_command(*args, cwd, timeout=900, env=None)->subprocess.CompletedProcess:
    "Run `glancesvdd ARGS` in `cwd` (environment `env`, default this one's): its exit code, stdout and stderr"
    return subprocess.run([str(BIN/'glancesvdd'), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)

def cli(*args, cwd, check=True):
    "`run_command`, asserting success when `check`: (exit code, stdout + stderr)"
    r = run_command(*args, cwd=cwd)
    out = r.stdout + r.stderr
    if check: assert r.returncode == 0, out
    return r.returncode, out

def as_in_a_terminal():
    """`preexec_fn` of a command the test stops with Ctrl-C: SIGINT acts as in a terminal's foreground job. A shell ignores
    SIGINT in its background jobs and their children inherit that, so a test suite started in the background would
    otherwise send its Ctrl-C to a process that never sees it"""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
