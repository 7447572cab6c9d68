"Hand-written setup: reads settings.ini (nbdev's project file) so `pip install -e .` works without nbdev's template."
from configparser import ConfigParser
from setuptools import setup, find_packages

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']
scripts = [s.strip() for s in cfg.get('console_scripts', '').split() if s.strip()]

setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    author=cfg['author'], author_email=cfg['author_email'], license='Apache-2.0',
    url=cfg['git_url'], keywords=cfg['keywords'].split(),
    long_description=open('README.md', encoding='utf-8').read(), long_description_content_type='text/markdown',
    packages=find_packages(include=['glancesvdd', 'glancesvdd.*']) + ['glancesvdd.experiments'], include_package_data=True,
    package_dir={'glancesvdd.experiments': 'nbs/experiments'},  # the papermill notebooks the command runs (60_batch), in the wheel
    package_data={'glancesvdd.experiments': ['*.ipynb']},
    python_requires=f">={cfg['min_python']}", install_requires=cfg['requirements'].split(),
    entry_points={'console_scripts': scripts, 'nbdev': [f"{cfg['lib_name']}={cfg['lib_name']}._modidx:d"]},
    classifiers=['Programming Language :: Python :: 3.11', 'Intended Audience :: Science/Research',
                 'Topic :: Scientific/Engineering :: Artificial Intelligence'],
    extras_require={}, project_urls={'Source': cfg['git_url']}, scripts=[],
    zip_safe=False)
