"A tiny data set in CIFAR-10's own pickle format, for the tests that read CIFAR-10 (nothing can be downloaded here)."
import pickle
from pathlib import Path
import numpy as np

NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']

def write_cifar(root, n_train=3, n_test=2, seed=1):
    "n_train images per class in each of the 5 training batches, n_test per class in the test batch, under root/cifar-10-batches-py"
    d = Path(root)/'cifar-10-batches-py'; d.mkdir(parents=True); rng = np.random.default_rng(seed)
    for name, n in [(f'data_batch_{k}', n_train) for k in range(1, 6)] + [('test_batch', n_test)]:
        labels = [c for _ in range(n) for c in range(10)]
        d.joinpath(name).write_bytes(pickle.dumps({'data': rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8),
                                                   'labels': labels, 'batch_label': name}))
    d.joinpath('batches.meta').write_bytes(pickle.dumps({'label_names': NAMES, 'num_vis': 3072}))
    return Path(root)
