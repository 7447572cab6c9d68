"Hand-written setup: reads settings.ini (nbdev's project file) so `pip install -e .` works without nbdev's template."
from configparser import ConfigParser
from setuptools import setup, find_packages

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']
scripts = [s.strip() for s in cfg.get('console_scripts', '').split() if s.strip()]
PYTHONS = ('3.11', '3.12')   # tested: 3.11 on the CPU machines (make test), 3.12 on the GPU machine (benchmarks/gpu_check.py)

setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    author=cfg['author'], license='Apache-2.0', keywords=cfg['keywords'].split(),   # no public author address or repository URL (settings.ini)
    long_description=open('README.md', encoding='utf-8').read(), long_description_content_type='text/markdown',
    packages=find_packages(include=['glancesvdd', 'glancesvdd.*']) + ['glancesvdd.experiments'], include_package_data=True,
    package_dir={'glancesvdd.experiments': 'nbs/experiments'},  # the papermill notebooks the command runs (60_batch), in the wheel
    package_data={'glancesvdd.experiments': ['*.ipynb']},
    python_requires=f">={cfg['min_python']}", install_requires=cfg['requirements'].split(),
    extras_require={'dev': cfg['dev_requirements'].split()},
    entry_points={'console_scripts': scripts, 'nbdev': [f"{cfg['lib_name']}={cfg['lib_name']}._modidx:d"]},
    classifiers=['Programming Language :: Python :: 3', *(f'Programming Language :: Python :: {v}' for v in PYTHONS),
                 'License :: OSI Approved :: Apache Software License', 'Intended Audience :: Science/Research',
                 'Topic :: Scientific/Engineering :: Artificial Intelligence'],
    zip_safe=False)
