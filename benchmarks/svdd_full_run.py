"""Patch SVDD's full official schedule (299 epochs) on one category, spread over as many GPU leases as it takes.

    python benchmarks/svdd_full_run.py --data data/mvtec256 --runs /tmp/runs --out OUT --until 300
    python benchmarks/svdd_full_run.py ... --resume benchmarks/results/svdd_bottle_full/resume.pt   # the next lease

It trains `train_svdd` with the default config (the official schedule: (epochs - 1) x ceil(100 N / 64) steps) in
<runs>/svdd/<category>/seed0, stops cleanly after --until seconds (the last checkpoint is at most `ckpt_every` steps old),
and writes to --out:
- `progress.json`: steps done of the schedule, seconds, seconds per step, the hardware, the data's fingerprint;
- `resume.pt`: the newest checkpoint (weights, optimiser, every random generator, the loss history), which the next
  lease passes back with --resume, so that the finished run is the one an uninterrupted run would have given;
- once the schedule is done: the run's record (config.json, train.json with the loss curve, metrics.json) after
  `infer_svdd` and `evaluate_run`, in IEEE float32.
`--precision` sets the training precision (default: the config's); `--precision-from GPU_CHECK.json` takes 'tf32' when the
GPU check's precision part found it the same as 'fp32' (its rule), and 'fp32' otherwise. A resumed schedule keeps the
precision it started with, whatever --precision-from says.

    python benchmarks/svdd_full_run.py --evaluate --resume .../resume.pt --data data/mvtec_ad --runs runs --out OUT --device cpu \
        --record results/svdd/bottle/seed0

evaluates the encoder of a checkpoint as it stands (any machine; inference in IEEE float32): the run folder gets model.pt
and train.json (whose `iters` says how far the schedule got) and is scored; `--record` writes its results record
(glancesvdd.reports.write_record), which the report marks with the steps done of the official schedule.
"""
from __future__ import annotations
import argparse, json, os, platform, shutil, signal, sys, time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

import torch

from glancesvdd.core import save_json, load_json, load_torch
from glancesvdd.data import fingerprint, image_files_in
from glancesvdd.runs import run_path, latest_checkpoint
from glancesvdd.svdd.config import SvddConfig
from glancesvdd.svdd.train import train_svdd, n_iters, steps_per_epoch, make_trainer, save_trained
from glancesvdd.svdd.model import mean_image, standardise


class Deadline(BaseException):
    "Raised in the main thread at --until (a BaseException: no library `except Exception` swallows it)"


def precision_from(check_json)->str:
    p = json.loads(Path(check_json).read_text())['parts'].get('precision.svdd', {})
    return 'tf32' if p.get('tf32_same_as_fp32') else 'fp32'


def hardware()->dict:
    hw = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda, cpu_count=os.cpu_count())
    if torch.cuda.is_available(): hw['gpu'] = torch.cuda.get_device_name(0)
    return hw


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', required=True, help='MVTec-layout root holding the category')
    ap.add_argument('--category', default='bottle')
    ap.add_argument('--runs', required=True, help='runs root on this machine')
    ap.add_argument('--out', required=True, help='where progress.json, resume.pt and the finished record go')
    ap.add_argument('--until', type=float, default=None, help='seconds of training in this call (required unless --evaluate)')
    ap.add_argument('--resume', default=None, help='resume.pt of an earlier call')
    ap.add_argument('--precision', default=None)
    ap.add_argument('--precision-from', default=None, help="a GPU check's JSON: 'tf32' if it found tf32 the same as fp32")
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--ckpt-every', type=int, default=None, help="steps between checkpoints (default: the config's)")
    ap.add_argument('--commit', default='unknown')
    ap.add_argument('--evaluate', action='store_true', help='score the --resume checkpoint as it stands instead of training')
    ap.add_argument('--record', default=None, help='with --evaluate: the results record folder to write')
    a = ap.parse_args(argv)
    if a.evaluate: return evaluate(a)
    if a.until is None: ap.error('--until SECONDS is required to train')
    cfg = SvddConfig(category=a.category, data_root=a.data, device=a.device)
    ck = load_torch(a.resume) if a.resume else None
    # a schedule keeps the precision it started with: --precision-from chooses it for a new run only
    prec = a.precision or (ck['config']['precision'] if ck else precision_from(a.precision_from) if a.precision_from else cfg.precision)
    cfg = replace(cfg, precision=prec, **({'ckpt_every': a.ckpt_every} if a.ckpt_every else {}))
    run, out = run_path('svdd', a.category, cfg.seed, a.runs), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if ck:
        if ck.get('config') != json.loads(json.dumps(asdict(cfg))):
            sys.exit(f"{a.resume} was made with another config: {ck.get('config')}; this call's: {asdict(cfg)}")
        (run/'checkpoints').mkdir(parents=True, exist_ok=True)
        save_json(ck['config'], run/'config.json')
        torch.save(ck['checkpoint'], run/'checkpoints'/f"iter_{ck['checkpoint']['iter']:08d}.pt")
    n_train = len(image_files_in(Path(a.data)/a.category/'train'/'good', recursive=False))   # the images train_svdd loads
    total = n_iters(cfg, n_train)
    start = (latest_checkpoint(run/'checkpoints') and load_torch(latest_checkpoint(run/'checkpoints'))['iter']) or 0
    def stop(signum, frame): raise Deadline
    signal.signal(signal.SIGALRM, stop); signal.setitimer(signal.ITIMER_REAL, a.until)
    t0, finished = time.time(), False
    print(f"{a.category}: precision {prec}, step {start} of {total}, training for at most {a.until:.0f} s", flush=True)
    try:
        train_svdd(cfg, run, progress=True); finished = True
    except Deadline: pass
    finally: signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.time() - t0
    ck_file = latest_checkpoint(run/'checkpoints')
    done = load_torch(ck_file)['iter'] if ck_file else 0
    rec = dict(category=a.category, config=asdict(cfg), schedule_steps=total, epochs_of_schedule=cfg.epochs - 1,
               steps_per_epoch=steps_per_epoch(n_train, cfg.repeat, cfg.batch_size), steps_done=done, steps_this_call=done - start,
               seconds_this_call=round(seconds, 1), s_per_step_this_call=seconds / max(done - start, 1), finished=finished,
               data=dict(root=a.data, fingerprint=fingerprint(Path(a.data)/a.category)), hardware=hardware(), commit=a.commit,
               date=time.strftime('%Y-%m-%d %H:%M:%S %Z'))
    if finished:
        from glancesvdd.svdd.infer import infer_svdd
        from glancesvdd.metrics import evaluate_run
        infer_svdd(cfg, run, progress=False)
        rec['metrics'] = evaluate_run(run)
        for f in ('config.json', 'train.json', 'metrics.json'):
            if (run/f).exists(): shutil.copy(run/f, out/f)
    elif ck_file:
        torch.save(dict(config=json.loads(json.dumps(asdict(cfg))), checkpoint=load_torch(ck_file)),
                   out/'resume.pt')
    save_json(rec, out/'progress.json')
    print(json.dumps({k: v for k, v in rec.items() if k not in ('config',)}, indent=1, default=str), flush=True)


def evaluate(a):
    "Score the encoder of checkpoint `a.resume` on `a.data` (its config's category), and record it if asked"
    from glancesvdd.data import load_config_split
    from glancesvdd.metrics import evaluate_run
    from glancesvdd.runs import _from_columns
    from glancesvdd.svdd.infer import infer_svdd
    ck = load_torch(a.resume, what='resume checkpoint')
    cfg = SvddConfig(**{**ck['config'], 'data_root': a.data, 'device': a.device})
    prog = Path(a.resume).with_name('progress.json')   # written beside resume.pt by the lease that trained it
    p = json.loads(prog.read_text()) if prog.exists() else {}
    trained_on = (f"{p['steps_done']:,} of {p['schedule_steps']:,} steps on {p['hardware'].get('gpu', 'a CPU')} ({p['date']}, commit "
                  f"{p['commit'][:7]}, precision {p['config']['precision']}, data {p['data']['root']}, fingerprint {p['data']['fingerprint'][:16]}...)") if p else None
    run = run_path('svdd', cfg.category, cfg.seed, a.runs)
    run.mkdir(parents=True, exist_ok=True)
    save_json(asdict(cfg), run/'config.json')
    images = load_config_split(cfg, 'train', progress=False)['images']
    x = standardise(images, mean_image(images))
    tr = make_trainer(cfg, x)                       # the modules, to load the checkpoint's weights into
    for k, m in tr['state'].items(): m.load_state_dict(ck['checkpoint']['state'][k])
    history = _from_columns(ck['checkpoint']['history'])
    save_trained(cfg, run, tr['encoder'], tr['classifiers'], history, x, schedule_steps=n_iters(replace(cfg, iters=None), len(x)),
                 trained_on=trained_on)
    infer_svdd(cfg, run, progress=False)
    m = evaluate_run(run)
    print(json.dumps(m, indent=1), flush=True)
    if a.record:
        from glancesvdd.reports import write_record
        write_record(run, a.record, 'python ' + ' '.join(sys.argv), trained_on=trained_on)


if __name__ == '__main__':
    main()
