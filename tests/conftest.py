import os
os.environ.setdefault('MPLBACKEND', 'Agg')

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes over a minute on 2 CPU cores')
    config.addinivalue_line('markers', 'gpu: needs a CUDA GPU (skipped without one)')
