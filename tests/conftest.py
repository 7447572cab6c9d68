import os
os.environ.setdefault('MPLBACKEND', 'Agg')
# On 2 shared cores, OpenMP threads that spin while waiting make torch many times slower (benchmarks/bench_svdd.py);
# sleeping waits avoid it. Set before torch starts, and inherited by the papermill kernels the tests start.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes over a minute on 2 CPU cores')
    config.addinivalue_line('markers', 'gpu: needs a CUDA GPU (skipped without one)')
