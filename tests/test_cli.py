"""Issues 23 and 24, the command line itself: one flag convention on every sub-command's help, the names it knows as the
parser's choices, and lists read by the parser; each through the installed `glancesvdd` command."""
import re, shutil

import pytest
from PIL import Image

from glancesvdd.cli import COMMANDS
from glancesvdd.core import load_json
from glancesvdd.data import make_synthetic_mvtec
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


# Method-scoped settings (issue 24): one --set for a batch of both methods; a bad one refused before any kernel starts

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "Two tiny synthetic categories (64 px: GLANCE resizes them to its 256)"
    d = tmp_path_factory.mktemp('cli')
    make_synthetic_mvtec(d/'data', categories=('brick', 'logo'), n_train=3, n_test_good=1, n_test_defect=1, image_size=64)
    (d/'noimages'/'n01').mkdir(parents=True); (d/'noimages'/'n01'/'readme.txt').write_text('no images here')
    return d

def error(r, *words):
    "Exit code 2, exactly one `glancesvdd: error:` line that holds `words`, no traceback"
    assert r.returncode == 2 and 'Traceback' not in r.stderr + r.stdout, (r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.startswith('glancesvdd: error:')]
    assert len(lines) == 1 and all(w in r.stderr for w in words), r.stderr
    return r.stderr

TINY = 'svdd.image_size=64,iters=2,glance.iters_finetune=2,glance.grid=2'   # both methods for a few iterations
GLANCE_OFFLINE = 'imagenet_dir=skip,teacher_weights=untrained'              # no ImageNet and no network here: opted out by name

def test_mixed_batch_takes_scoped_settings(work):
    r = run_command('batch', '--methods', 'glance,svdd', '--categories', 'brick', '--data', 'data', '--runs', 'mruns', '--smoke',
                    '--set', f'{GLANCE_OFFLINE},{TINY}', cwd=work)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '| glance | brick | 0 | done |' in r.stdout and '| svdd | brick | 0 | done |' in r.stdout, r.stdout
    glance, svdd = (load_json(work/'mruns'/m/'brick'/'seed0'/'config.json') for m in ('glance', 'svdd'))
    assert (glance['imagenet_dir'], glance['teacher_weights'], glance['iters'], glance['iters_finetune'], glance['grid']) == ('skip', 'untrained', 2, 2, 2)
    assert (svdd['image_size'], svdd['iters']) == (64, 2) and 'imagenet_dir' not in svdd

@pytest.mark.parametrize('methods, values, words', [
    ('glance,svdd', 'svdd.imagenet_dir=skip', ['svdd.imagenet_dir: imagenet_dir is not a field of the svdd config']),
    ('glance,svdd', 'imagenet_dir=skip,lr_globl=1', ['lr_globl: not a field of the glance or svdd config']),
    ('svdd', 'glance.imagenet_dir=skip', ['this command runs svdd, not glance']),
    ('glance,svdd', f'{GLANCE_OFFLINE},iters=None', ["GlanceConfig.iters: expected an integer, given 'None'"]),   # None fits svdd's alone
    ('glance,svdd', 'teacher_weights=untrained', ['imagenet_dir is not set', "imagenet_dir='skip'"]),
    ('glance', 'imagenet_dir=nowhere,teacher_weights=untrained', ['imagenet_dir nowhere is not a folder']),
    ('glance', 'imagenet_dir=noimages,teacher_weights=untrained', ['imagenet_dir noimages holds no images']),
    ('glance', 'imagenet_dir=skip,teacher_weights=data/resnet18.pth', ['teacher_weights: data/resnet18.pth is not a file']),
    ('glance', 'imagenet_dir=skip,teacher_weights=data/brick/train/good/000.png', ['teacher_weights data/brick/train/good/000.png is damaged or not a PyTorch file', "give ResNet-18's ImageNet weights"]),
])
def test_batch_refuses_before_any_kernel(work, methods, values, words):
    error(run_command('batch', '--methods', methods, '--categories', 'brick,logo', '--data', 'data', '--runs', 'xruns', '--smoke',
                      '--set', values, cwd=work), *words)
    assert not (work/'xruns').exists()   # not one run folder made, so no kernel started

def test_train_refuses_a_scoped_field_of_another_method(work):
    error(run_command('train', 'svdd', 'brick', '--data', 'data', '--runs', 'xruns', '--set', 'glance.iters=3', cwd=work),
          'this command runs svdd, not glance')
    assert not (work/'xruns').exists()


# evaluate --run DIR (issue 24): the run folder names the run; anything else that would name it is refused

@pytest.mark.parametrize('args, words', [
    (('svdd', '--run', 'runs/svdd/brick/seed0'), ['--run reads the method, category, seed, data and config from runs/svdd/brick/seed0/config.json: drop METHOD']),
    (('--run', 'runs/svdd/brick/seed0', '--set', 'lr=1', '--seed', '0', '--data', 'data'), ['drop --data, --seed, --set']),
    (('--run', 'runs/svdd/brick'), ['runs/svdd/brick is not a run folder: expected <runs>/<method>/<category>/seed<k>']),
    (('--run', 'nowhere/svdd/brick/seed0'), ['nowhere/svdd/brick/seed0/config.json does not exist']),
    (('svdd',), ['evaluate needs METHOD and CATEGORY, or --run DIR']),
])
def test_evaluate_run_refuses(work, args, words):
    error(run_command('evaluate', *args, cwd=work), *words)
    assert not (work/'runs').exists() and not (work/'nowhere').exists()


# A run's identity comes from one place (issue 23): the command's own arguments, never --set

@pytest.mark.parametrize('args, words', [
    (('train', 'svdd', 'brick', '--set', 'category=logo'), ["--set category: a run's category is given by the command's own CATEGORY"]),
    (('train', 'svdd', 'brick', '--set', 'data_root=data'), ["--set data_root: a run's data_root is given by the command's own --data"]),
    (('train', 'svdd', 'brick', '--seed', '1', '--set', 'seed=5'), ["--set seed: a run's seed is given by the command's own --seed"]),
    (('train', 'glance', 'brick', '--set', f'{GLANCE_OFFLINE},device=cpu'), ["--set device: a run's device is given by the command's own --device"]),
    (('batch', '--methods', 'svdd', '--categories', 'brick', '--seeds', '0,1', '--set', 'seed=5'), ["--set seed:", '(batch: --seeds)']),
    (('evaluate', 'svdd', '--release', 'rel', '--categories', 'brick', '--set', 'category=logo'), ["--set category:"]),
])
def test_identity_comes_from_the_command(work, args, words):
    (work/'rel'/'ckpts').mkdir(parents=True, exist_ok=True)
    error(run_command(*args, '--data', 'data', '--runs', 'iruns', cwd=work), *words)
    assert not (work/'iruns').exists()


# Every job of a command checked before any kernel starts (issue 23)

@pytest.fixture(scope='module')
def bad_data(work):
    "bdata: brick as it is, `masks` with a mask of another size than its image, `goodonly` whose test set has no anomalous image"
    root = work/'bdata'
    for c in ('brick', 'masks', 'goodonly'): shutil.copytree(work/'data'/'brick', root/c)
    mask = sorted((root/'masks'/'ground_truth').rglob('*_mask.png'))[0]
    Image.open(mask).resize((32, 32)).save(mask)
    for d in (root/'goodonly'/'test').iterdir():
        if d.name != 'good': shutil.rmtree(d)
    return root

def test_glance_smoke_without_imagenet_is_refused_and_the_advice_works(work):
    args = ('train', 'glance', 'brick', '--data', 'data', '--runs', 'gruns', '--smoke')
    error(run_command(*args, cwd=work), 'imagenet_dir is not set', "imagenet_dir='skip'")
    assert not (work/'gruns').exists()            # no kernel, no config.json that would refuse the advice as "another config"
    r = run_command(*args, '--set', f'{GLANCE_OFFLINE},iters=2,iters_finetune=2,grid=2', cwd=work)
    assert r.returncode == 0 and (work/'gruns'/'glance'/'brick'/'seed0'/'glance.pt').exists(), r.stderr

def test_every_seed_is_checked(work):
    error(run_command('batch', '--methods', 'svdd', '--categories', 'brick', '--seeds', '0,-1', '--data', 'data', '--runs', 'sruns',
                      '--smoke', cwd=work), 'SvddConfig.seed: expected in [0, 4294967295], given -1')
    assert not (work/'sruns').exists()            # seed 0 did not train first

@pytest.mark.parametrize('step, category, words', [
    ('train', 'masks', ['is 32x32 but its image', 'is 64x64']),
    ('train', 'goodonly', ['goodonly/test holds only normal (test/good) images']),
    ('evaluate', 'goodonly', ['goodonly/test holds only normal (test/good) images']),
])
def test_bad_data_refused_before_training(work, bad_data, step, category, words):
    error(run_command(step, 'svdd', category, '--data', 'bdata', '--runs', 'druns', '--smoke', cwd=work), *words)
    assert not (work/'druns').exists()

def test_a_batch_runs_the_good_categories_and_names_the_bad_at_once(work, bad_data):
    r = run_command('batch', '--methods', 'svdd', '--categories', 'masks,brick,goodonly', '--data', 'bdata', '--runs', 'druns2',
                    '--smoke', '--set', 'image_size=64,iters=2', cwd=work)
    err = error(r, '2 of 3 runs failed')
    warned = err.index('glancesvdd: warning: 2 of 3 runs are not started, their data being unusable:')
    assert warned < err.index('druns2/svdd/masks/seed0: mask') < err.index('druns2/svdd/goodonly/seed0: bdata/goodonly/test holds only') < err.index('runs:'), err   # said before the runs start
    assert '| svdd | brick | 0 | done |' in r.stdout and '| svdd | masks | 0 | failed |' in r.stdout, r.stdout
    assert sorted(p.name for p in (work/'druns2'/'svdd').iterdir()) == ['brick']   # no folder, so no kernel, for the other two


# Silent choices (issue 23): a field given twice, a size no method defines

@pytest.mark.parametrize('values, words', [
    ('iters=4,iters=5000000', ["--set gives svdd's iters twice (iters=..., iters=...): give it once"]),
    ('image_size=100000', ['SvddConfig.image_size: expected in [64, 1024], given 100000', 'at most 1024 px']),
])
def test_silent_choices_are_refused(work, values, words):
    error(run_command('train', 'svdd', 'brick', '--data', 'data', '--runs', 'cruns', '--smoke', '--set', values, cwd=work), *words)
    assert not (work/'cruns').exists()


# Messages cut short, and tracebacks (issue 23)

def test_a_reason_is_whole_and_the_footer_true(work, bad_data):
    r = run_command('batch', '--methods', 'svdd', '--categories', 'masks,goodonly', '--data', 'bdata', '--runs', 'fruns', cwd=work)
    err = error(r, '2 of 2 runs failed (see the table above)')
    assert 'are kept' not in err and '(see None)' not in r.stdout, (err, r.stdout)
    row = next(l for l in r.stdout.splitlines() if l.startswith('| svdd | masks |'))
    assert row.endswith("is 64x64: a mask marks its image's pixels |"), row   # the sizes, past the old 80-character cut
    assert not (work/'fruns'/'svdd').exists()

@pytest.mark.parametrize('command', ['batch', 'demo'])
@pytest.mark.parametrize('categories', ['', ' , '])
def test_no_category_is_a_clear_error(work, command, categories):
    refused(run_command(command, '--categories', categories, '--runs', 'nruns', cwd=work), 'argument --categories: no category given')
    assert not (work/'nruns').exists()


# batch_summary.json: one per runs root, each command adding its runs (issue 23); one run twice in one command

def test_summaries_of_two_commands_are_both_kept(work, bad_data):
    for cat in ('masks', 'goodonly'):   # each fails at once, without a kernel: two quick commands on one runs root
        error(run_command('batch', '--methods', 'svdd', '--categories', cat, '--data', 'bdata', '--runs', 'mruns2', cwd=work), '1 of 1 runs failed')
    results = load_json(work/'mruns2'/'batch_summary.json')['results']
    assert [r['category'] for r in results] == ['masks', 'goodonly'], results
    error(run_command('batch', '--methods', 'svdd', '--categories', 'goodonly', '--data', 'bdata', '--runs', 'mruns2', cwd=work), '1 of 1 runs failed')
    assert [r['category'] for r in load_json(work/'mruns2'/'batch_summary.json')['results']] == ['masks', 'goodonly']   # replaced, not added twice

@pytest.mark.parametrize('categories', ['brick,brick', 'brick,./brick'])
def test_one_run_twice_in_one_command_is_refused(work, categories):
    r = run_command('batch', '--methods', 'svdd', '--categories', categories, '--workers', '2', '--data', 'data', '--runs', 'truns', cwd=work)
    if categories == 'brick,brick': refused(r, 'argument --categories: brick given twice')
    else: error(r, 'truns/svdd/brick/seed0: one run given twice to this command')
    assert not (work/'truns').exists()
