"""Issues 23 and 24, the command line itself: one flag convention on every sub-command's help, the names it knows as the
parser's choices, and lists read by the parser; each through the installed `glancesvdd` command."""
import re

import pytest

from glancesvdd.cli import COMMANDS
from command import run_command

FLAG = re.compile(r'-h|--[a-z0-9]+(-[a-z0-9]+)*')   # argparse's own convention: lower case, words joined by hyphens

def refused(r, *words):
    "Exit code 2, argparse's one error line (after the usage) holding `words`, no traceback"
    assert r.returncode == 2 and 'Traceback' not in r.stderr, (r.returncode, r.stderr)
    errors = [l for l in r.stderr.splitlines() if ': error: ' in l]
    assert len(errors) == 1 and all(w in errors[0] for w in words), r.stderr
    return errors[0]

def test_every_help_follows_one_convention(tmp_path):
    top = run_command('--help', cwd=tmp_path)
    assert top.returncode == 0 and all(f' {name} ' in top.stdout for name in COMMANDS), top.stdout
    for name in COMMANDS:
        r = run_command(name, '--help', cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        flags = set(re.findall(r'(?<![\w-])--?\w[\w-]*', r.stdout))   # the usage, the option list and the flags the help texts name
        assert {'-h', '--help'} <= flags and not [f for f in flags if not FLAG.fullmatch(f)], (name, sorted(flags))
        assert not re.search(r'\(default: (True|False|None)\)', r.stdout), (name, r.stdout)   # a flag's default says nothing

def test_second_spellings(tmp_path):
    r = run_command('batch', '--help', cwd=tmp_path)
    assert '--methods METHODS, --method METHODS' in r.stdout, r.stdout
    assert '--from-dir FROM_DIR, --from FROM_DIR' in run_command('download', '--help', cwd=tmp_path).stdout
    refused(run_command('batch', '--method', 'svdd,patchcore', cwd=tmp_path), 'argument --methods/--method: invalid choice: patchcore')

@pytest.mark.parametrize('args, words', [
    (('train', 'patchcore', 'brick'), ["argument method: invalid choice: 'patchcore' (choose from 'glance', 'svdd')"]),
    (('predict', 'svdd2', 'brick', 'x.png'), ["invalid choice: 'svdd2'"]),
    (('download', 'imagenet'), ["invalid choice: 'imagenet' (choose from 'mvtec', 'cifar10', 'patchsvdd-release')"]),
    (('batch', '--executor', 'cloud'), ["argument --executor: invalid choice: 'cloud' (choose from 'local', 'slurm', 'submitit-local')"]),
    (('evaluate', 'svdd', '--release', 'rel', '--executor', 'cloud'), ["invalid choice: 'cloud'"]),
    (('batch', '--seeds', '0,one'), ["argument --seeds: expected int values separated by commas, not '0,one'"]),
    (('batch', '--data_root', 'data'), ['unrecognized arguments: --data_root']),
])
def test_parser_refuses(tmp_path, args, words):
    refused(run_command(*args, cwd=tmp_path), *words)
    assert not list(tmp_path.iterdir())   # nothing written
