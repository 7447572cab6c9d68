"""`glancesvdd batch` past one process (issue 14): one local job per visible GPU (a faked device list), and SLURM through
submitit, checked with submitit's local executor and with fake `sbatch`/`srun`/`scontrol` commands that record what
submitit sends: the job array's script (partition, GPU request, time limit), and a preempted job requeued and resumed."""
import math, os, pickle, shlex, signal, subprocess, sys, threading, time
from pathlib import Path

import pytest
import torch

import glancesvdd.batch as B
from glancesvdd.core import load_torch
from glancesvdd.data import make_synthetic_mvtec
from glancesvdd.runs import latest_checkpoint

ROOT, TESTS = Path(__file__).resolve().parents[1], Path(__file__).resolve().parent


# ------------------------------------------------------------------ local: one job per visible GPU
def test_local_executor_runs_one_job_per_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(B.torch.cuda, 'device_count', lambda: 3)   # a machine with three GPUs, as torch would see it
    seen, busy, lock = [], set(), threading.Lock()
    def fake_run_job(job, force=False, experiments=None):
        with lock:
            assert job.device not in busy, f'two runs at once on {job.device}'
            busy.add(job.device); seen.append((job.category, job.device, job.threads, threading.current_thread().name))
        time.sleep(0.1)
        with lock: busy.discard(job.device)
        return dict(method=job.method, category=job.category, seed=job.seed, run_dir=str(job.run_dir), status='done')
    monkeypatch.setattr(B, 'run_job', fake_run_job)
    monkeypatch.setattr(B, 'check_data', lambda job: None)         # no data behind these jobs: the executor alone is tested
    jobs = [B.Job('svdd', f'c{i}', runs_root=str(tmp_path)) for i in range(7)]
    res = B.batch(jobs, progress=False)
    assert [(r['category'], r['status']) for r in res] == [(f'c{i}', 'done') for i in range(7)]   # the jobs' order
    assert sorted(c for c, *_ in seen) == [f'c{i}' for i in range(7)]                          # each job once
    assert {d for _, d, *_ in seen} == {'cuda:0', 'cuda:1', 'cuda:2'} and {t for _, _, t, _ in seen} == {0}   # GPU runs: default threads
    assert len({t for *_, t in seen}) == 3                          # one worker thread per GPU
    assert [r['status'] for r in B.batch([B.Job('svdd', 'x', runs_root=str(tmp_path), device='cpu')], progress=False)] == ['done']
    assert seen[-1][1] == 'cpu'                                     # an explicit device is used as given


# ------------------------------------------------------------------ a training run that a preemption interrupts once
@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_synthetic_mvtec(tmp_path_factory.mktemp('slurm')/'data', categories=('gravel',), n_train=4, n_test_good=1,
                                n_test_defect=1, defects=('stain',), image_size=128)


def tiny_job(data, runs):
    return B.Job('svdd', 'gravel', data_root=str(data), runs_root=str(runs), device='cpu',
                 overrides=(('iters', 6), ('batch_size', 2), ('ckpt_every', 2), ('image_size', 128)))


def preempted_once(job, force=False, experiments=None):
    """Stand-in for `run_job` (no papermill): trains the job's tiny Patch SVDD run; on the first attempt it sends itself
    SIGUSR2, as SLURM does before preempting a job or at its time limit, in step 4, after the checkpoint of step 2"""
    import glancesvdd.svdd.train as T
    torch.set_num_threads(1)
    attempts = job.run_dir.parent/'attempts.txt'
    attempts.parent.mkdir(parents=True, exist_ok=True)
    first = not attempts.exists()
    with open(attempts, 'a') as f: f.write(f"{latest_checkpoint(job.run_dir/'checkpoints') if job.run_dir.exists() else None}\n")
    if first:
        real, calls = T.crop_pairs, []
        def crop(*a, **k):
            calls.append(1)
            if len(calls) == 7: os.kill(os.getpid(), signal.SIGUSR2); time.sleep(30)   # submitit's handler requeues and exits
            return real(*a, **k)
        T.crop_pairs = crop
    T.train_svdd(B.method_config(job.method, job.parameters), job.run_dir, progress=False)
    return dict(status='done', attempts=attempts.read_text().split())


@pytest.fixture(scope='module')
def reference(data, tmp_path_factory):
    "The same run, uninterrupted, in this process (one thread, as the jobs)"
    job, n = tiny_job(data, tmp_path_factory.mktemp('ref')), torch.get_num_threads()
    torch.set_num_threads(1)
    try: B.method_api('svdd')['train'](B.method_config('svdd', job.parameters), job.run_dir, progress=False)
    finally: torch.set_num_threads(n)
    return load_torch(job.run_dir/'model.pt')


def same_weights(a, b): return all(torch.equal(a[p][k], b[p][k]) for p in ('encoder', 'cls_64', 'cls_32') for k in a[p])


@pytest.fixture
def job_env(monkeypatch):
    "Job processes import this module (the stand-in) and run on one thread"
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([str(TESTS), str(ROOT), os.environ.get('PYTHONPATH', '')]))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')


def test_submitit_local_requeue_resumes(data, reference, tmp_path, job_env):
    "submitit's local executor: the preempted job is requeued, and the requeued job resumes from the checkpoint of step 2"
    job = tiny_job(data, tmp_path/'runs')
    (fut,) = B.submit_jobs([job], 'submitit-local', folder=tmp_path/'submitit', fn=preempted_once)
    res = fut.result()
    assert res['status'] == 'done' and res['attempts'] == ['None', str(job.run_dir/'checkpoints'/'iter_00000002.pt')]
    assert same_weights(load_torch(job.run_dir/'model.pt'), reference)


# ------------------------------------------------------------------ SLURM: fake sbatch, srun and scontrol
@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    "sbatch saves each script it is given and answers with job 4242; scontrol logs its arguments; srun only exists"
    bin_, log = tmp_path/'bin', tmp_path/'slurm_log'
    bin_.mkdir(); log.mkdir()
    (bin_/'sbatch').write_text(f'#!/bin/sh\nn=$(ls {log} | grep -c sbatch_)\ncp "$1" {log}/sbatch_$n.sh\necho "Submitted batch job 4242"\n')
    (bin_/'scontrol').write_text(f'#!/bin/sh\necho "$@" >> {log}/scontrol.txt\n')
    (bin_/'srun').write_text('#!/bin/sh\nexit 0\n')
    for f in bin_.iterdir(): f.chmod(0o755)
    monkeypatch.setenv('PATH', f"{bin_}{os.pathsep}{os.environ['PATH']}")
    return log


def test_slurm_array_script(tmp_path, fake_slurm):
    "Three runs go as one job array, each task asking for one GPU, the partition given, and a time limit sized from GLANCE's schedule"
    jobs = [B.Job('svdd', 'bottle', runs_root=str(tmp_path/'runs')), B.Job('glance', 'bottle', runs_root=str(tmp_path/'runs')),
            B.Job('svdd', 'bottle', seed=1, runs_root=str(tmp_path/'runs'))]
    futs = B.submit_jobs(jobs, 'slurm', folder=tmp_path/'submitit', slurm=dict(partition='gpu'))
    scripts = sorted(fake_slurm.glob('sbatch_*.sh'))
    assert len(scripts) == 1 and [f.job_id for f in futs] == ['4242_0', '4242_1', '4242_2']
    s = scripts[0].read_text()
    minutes = B.slurm_parameters(jobs)['timeout_min']
    assert minutes == math.ceil(2 * B.schedule_seconds(jobs[1]) / 60) + 30 and minutes > 200   # GLANCE: about 1.8 h on an H200, doubled
    for line in ('#SBATCH --partition=gpu', '#SBATCH --gpus-per-node=1', f'#SBATCH --time={minutes}', '#SBATCH --array=0-2%3',
                 '#SBATCH --requeue', '#SBATCH --signal=USR2@90', '#SBATCH --cpus-per-task=8', '#SBATCH --mem=32GB'):
        assert line in s, (line, s)
    for f in futs: assert f.paths.submitted_pickle.exists()
    # the user's settings win, SLURM's own names included
    B.submit_jobs(jobs[:1], 'slurm', folder=tmp_path/'submitit', slurm=dict(partition='a100', time='2-00:00:00', gpus_per_node=2))
    s = sorted(fake_slurm.glob('sbatch_*.sh'))[-1].read_text()
    assert '#SBATCH --partition=a100' in s and '#SBATCH --time=2-00:00:00' in s and '#SBATCH --gpus-per-node=2' in s
    with pytest.raises(B.GlanceSvddError, match='partiton'): B.submit_jobs(jobs, 'slurm', folder=tmp_path/'x', slurm=dict(partiton='gpu'))


def test_slurm_preempted_job_is_requeued_and_resumes(data, reference, tmp_path, fake_slurm, job_env):
    "Array task 0 runs as SLURM would start it; SIGUSR2 makes submitit checkpoint it and `scontrol requeue` it; run again, it resumes"
    job = tiny_job(data, tmp_path/'runs')
    (fut,) = B.submit_jobs([job], 'slurm', folder=tmp_path/'submitit', slurm=dict(partition='gpu'), fn=preempted_once)
    script = sorted(fake_slurm.glob('sbatch_*.sh'))[-1].read_text()
    cmd = shlex.split(script.strip().splitlines()[-1].split(' -u -m ', 1)[1])   # submitit.core._submit <folder>
    env = dict(os.environ, SUBMITIT_EXECUTOR='slurm', SLURM_JOB_ID='4242', SLURM_PROCID='0', SLURM_LOCALID='0', SLURM_NODEID='0',
               SLURM_NTASKS='1', SLURM_JOB_NUM_NODES='1', SLURM_JOB_NODELIST='localhost')
    start = lambda: subprocess.run([sys.executable, '-u', '-m', *cmd], env=env, capture_output=True, text=True, timeout=300)
    r = start()
    assert r.returncode != 0 and (fake_slurm/'scontrol.txt').read_text().split() == ['requeue', '4242'], r.stderr[-3000:]
    assert latest_checkpoint(job.run_dir/'checkpoints').name == 'iter_00000002.pt' and not (job.run_dir/'model.pt').exists()
    r = start()                                                    # SLURM starts the requeued job again
    assert r.returncode == 0, r.stderr[-3000:]
    status, res = pickle.loads(fut.paths.result_pickle.read_bytes())
    assert status == 'success' and res['attempts'] == ['None', str(job.run_dir/'checkpoints'/'iter_00000002.pt')]
    assert same_weights(load_torch(job.run_dir/'model.pt'), reference)


def test_cli_passes_cluster_settings(data, tmp_path, monkeypatch):
    "`glancesvdd batch --executor slurm --slurm ... --slurm-config FILE` hands batch() the merged settings"
    import glancesvdd.cli as cli
    got = {}
    def fake_batch(jobs, executor='local', force=False, slurm=None, **kw):
        got.update(jobs=jobs, executor=executor, slurm=slurm, workers=kw.get('workers')); return []
    monkeypatch.setattr(B, 'batch', fake_batch)   # the command imports batch() when it runs
    (tmp_path/'cluster.yaml').write_text('partition: gpu\ncpus_per_task: 16\nadditional_parameters:\n  qos: high\n')
    rc = cli.main(['batch', '--methods', 'svdd', '--categories', 'gravel', '--data', str(data), '--runs', str(tmp_path/'runs'),
                   '--executor', 'slurm', '--slurm-config', str(tmp_path/'cluster.yaml'), '--slurm', 'timeout_min=2880,partition=a100'])
    assert rc == 0 and got['executor'] == 'slurm' and len(got['jobs']) == 1 and got['workers'] == 0
    assert got['slurm'] == dict(partition='a100', cpus_per_task=16, additional_parameters=dict(qos='high'), timeout_min=2880)
    p = B.slurm_parameters(got['jobs'], got['slurm'])
    assert (p['gpus_per_node'], p['timeout_min'], p['partition']) == (1, 2880, 'a100')   # the default GPU request stays
    assert cli.main(['batch', '--methods', 'svdd', '--categories', 'gravel', '--data', str(data), '--workers', '2']) == 0 and got['workers'] == 2
