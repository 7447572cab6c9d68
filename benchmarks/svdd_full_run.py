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
GPU check's precision part found it the same as 'fp32' (its rule), and 'fp32' otherwise.
"""
from __future__ import annotations
import argparse, json, os, platform, shutil, signal, sys, time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

import torch

from glancesvdd.core import save_json, load_json, load_torch
from glancesvdd.data import fingerprint
from glancesvdd.runs import run_path, latest_checkpoint
from glancesvdd.svdd.train import SvddConfig, train_svdd, n_iters, steps_per_epoch


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
    ap.add_argument('--until', type=float, required=True, help='seconds of training in this call')
    ap.add_argument('--resume', default=None, help='resume.pt of an earlier call')
    ap.add_argument('--precision', default=None)
    ap.add_argument('--precision-from', default=None, help="a GPU check's JSON: 'tf32' if it found tf32 the same as fp32")
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--ckpt-every', type=int, default=None, help="steps between checkpoints (default: the config's)")
    ap.add_argument('--commit', default='unknown')
    a = ap.parse_args(argv)
    cfg = SvddConfig(category=a.category, data_root=a.data, device=a.device)
    prec = a.precision or (precision_from(a.precision_from) if a.precision_from else cfg.precision)
    cfg = replace(cfg, precision=prec, **({'ckpt_every': a.ckpt_every} if a.ckpt_every else {}))
    run, out = run_path('svdd', a.category, cfg.seed, a.runs), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.resume:
        ck = load_torch(a.resume)
        if ck.get('config') != json.loads(json.dumps(asdict(cfg))):
            sys.exit(f"{a.resume} was made with another config: {ck.get('config')}; this call's: {asdict(cfg)}")
        (run/'checkpoints').mkdir(parents=True, exist_ok=True)
        save_json(ck['config'], run/'config.json')
        torch.save(ck['checkpoint'], run/'checkpoints'/f"iter_{ck['checkpoint']['iter']:08d}.pt")
    n_train = len(list((Path(a.data)/a.category/'train'/'good').iterdir()))
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


if __name__ == '__main__':
    main()
