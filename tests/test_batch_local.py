"""The local executor on a machine without a GPU: runs share the cores (two kernels at once, each with its share of the threads),
the runs with the most images start first, the results come back in the jobs' order, and Ctrl-C stops the running kernels
(which run in sessions of their own, out of the terminal's reach) and starts no more."""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import nbformat
import pytest

import glancesvdd.batch as B
from command import as_in_a_terminal

PARAMS = "method, category, seed, data_root, runs_root, device, smoke, config = 'toy', 'a', 0, 'data', 'runs', 'auto', False, {}"


def toy_notebooks(d:Path, sleep:float) -> Path:
    "train_toy records when it ran, in which process and with which thread settings, then sleeps; evaluate writes metrics"
    train = textwrap.dedent(f"""
        import json, os, time
        import torch
        from glancesvdd.batch import Job
        run = Job(method, category, seed, runs_root=runs_root).run_dir
        t0 = time.time()
        (run/'started.json').write_text(json.dumps(dict(pid=os.getpid(), omp=os.environ.get('OMP_NUM_THREADS'),
                                                        torch_threads=torch.get_num_threads(), device=device, start=t0)))
        time.sleep({sleep})
        (run/'ended.json').write_text(json.dumps(dict(end=time.time())))""")
    evaluate = textwrap.dedent("""
        from glancesvdd.batch import Job
        from glancesvdd.core import save_json
        save_json(dict(image_auroc=0.75, pixel_auroc=0.5, aupro=0.25), Job(method, category, seed, runs_root=runs_root).run_dir/'metrics.json')""")
    d.mkdir(parents=True, exist_ok=True)
    for name, code in (('train_toy', train), ('evaluate', evaluate)):
        nb = nbformat.v4.new_notebook()
        nb.metadata['kernelspec'] = dict(name='python3', display_name='python3', language='python')
        nb.cells = [nbformat.v4.new_code_cell(PARAMS, metadata=dict(tags=['parameters'])), nbformat.v4.new_code_cell(code)]
        nbformat.write(nb, d/f'{name}.ipynb')
    return d


def toy_data(root:Path, images:dict) -> Path:
    "Empty image files: `images[category]` training images each (all the executor reads is how many there are)"
    for c, n in images.items():
        (root/c/'train'/'good').mkdir(parents=True)
        for i in range(n): (root/c/'train'/'good'/f'{i:03d}.png').touch()
    return root


def test_cpu_runs_share_the_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(B.torch, 'get_num_threads', lambda: 4)      # this process would use 4 threads: two runs of 2
    exp, data = toy_notebooks(tmp_path/'exp', sleep=3), toy_data(tmp_path/'data', dict(small=1, big=5, mid=3))
    jobs = [B.Job('toy', c, data_root=str(data), runs_root=str(tmp_path/'runs'), device='cpu') for c in ('small', 'big', 'mid')]
    res = B.batch(jobs, experiments=exp, progress=False)
    assert [(r['category'], r['status']) for r in res] == [('small', 'done'), ('big', 'done'), ('mid', 'done')]   # the jobs' order
    seen = {j.category: json.loads((j.run_dir/'started.json').read_text()) | json.loads((j.run_dir/'ended.json').read_text())
            for j in jobs}
    assert {(s['omp'], s['torch_threads'], s['device']) for s in seen.values()} == {('2', 2, 'cpu')}, seen
    assert seen['mid']['start'] < seen['big']['end'] and seen['big']['start'] < seen['mid']['end']   # the two largest ran together
    assert seen['small']['start'] >= min(seen['big']['end'], seen['mid']['end'])                      # the smallest waited for a slot
    summary = json.loads((tmp_path/'runs'/'batch_summary.json').read_text())
    assert summary['pending'] == 0 and [r['category'] for r in summary['results']] == ['small', 'big', 'mid']   # saved in the jobs' order too


def test_one_worker_keeps_the_order_and_the_default_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(B.torch, 'get_num_threads', lambda: 4)
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    exp, data = toy_notebooks(tmp_path/'exp', sleep=0), toy_data(tmp_path/'data', dict(small=1, big=5))
    jobs = [B.Job('toy', c, data_root=str(data), runs_root=str(tmp_path/'runs'), device='cpu') for c in ('small', 'big')]
    assert [r['status'] for r in B.batch(jobs, experiments=exp, progress=False, workers=1)] == ['done', 'done']
    seen = {j.category: json.loads((j.run_dir/'started.json').read_text()) for j in jobs}
    assert seen['small']['start'] < seen['big']['start'] and seen['small']['omp'] is None   # given order, the kernel's own threads


def test_bad_workers(tmp_path):
    with pytest.raises(B.GlanceSvddError, match='workers: expected 0'):
        B.batch([B.Job('toy', 'a', runs_root=str(tmp_path))], workers=-1)


CTRL_C = """
import sys, glancesvdd.batch as B
B.torch.get_num_threads = lambda: 2
jobs = [B.Job('toy', f'c{i}', runs_root=sys.argv[2], device='cpu') for i in range(4)]
try: B.batch(jobs, experiments=sys.argv[1], progress=False)
except KeyboardInterrupt: print('interrupted'); sys.exit(130)
"""

def test_ctrl_c_stops_the_running_kernels(tmp_path):
    exp, runs = toy_notebooks(tmp_path/'exp', sleep=300), tmp_path/'runs'
    p = subprocess.Popen([sys.executable, '-c', CTRL_C, str(exp), str(runs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=as_in_a_terminal)
    started = lambda: sorted(runs.glob('toy/*/seed0/started.json'))
    t0 = time.time()
    def pids():   # the two runs' kernel pids, once both have written started.json in full
        try: return [json.loads(f.read_text())['pid'] for f in started()] if len(started()) >= 2 else None
        except json.JSONDecodeError: return None   # being written
    while not pids():
        assert p.poll() is None, p.communicate()
        assert time.time() - t0 < 120, 'the two runs did not start'
        time.sleep(0.1)
    kernels = pids()
    p.send_signal(signal.SIGINT); t1 = time.time()
    out, err = p.communicate(timeout=280)                  # the runs sleep 300 s: any wait for them would pass this
    assert p.returncode == 130 and out.strip() == 'interrupted', (out, err[-2000:])
    assert time.time() - t1 < 150, 'the batch waited for its runs instead of stopping them'   # 5x the 30 s seen on a loaded machine
    gone = lambda pid: not Path(f'/proc/{pid}').exists() or 'zombie' in Path(f'/proc/{pid}/status').read_text().lower()
    t2 = time.time()
    while not all(map(gone, kernels)) and time.time() - t2 < 60: time.sleep(0.2)   # the kernels go (a zombie still shows in /proc)
    assert all(map(gone, kernels)), kernels
    assert len(started()) == 2                             # no run started after Ctrl-C
    assert not (runs/'batch_summary.json').exists()        # the stopped runs are not reported failed: they stay to run again
    assert not list(runs.glob('toy/*/seed0/metrics.json'))
