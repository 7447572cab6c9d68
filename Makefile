# The two commands of the README: `make demo` (main job) and `make test` (all tests).
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test nbtest pytest export clean-nbs docs

$(STAMP): requirements.txt setup.py settings.ini
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/glancesvdd demo

# Sync/clean check (tests/test_nbdev_sync.py), notebook checks (nbdev_test), then pytest.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing
	$(BIN)/python -m pytest tests -q -ra

export: $(STAMP)
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

# The notebooks, executed with their widget state, as a static HTML site in docs/_site (no Quarto; needs node + npm)
docs: $(STAMP)
	$(BIN)/glancesvdd docs

# README.md is nbs/index.ipynb as Markdown (nbdev_readme needs Quarto, which these machines lack)
readme: $(STAMP)
	$(BIN)/jupyter nbconvert --to markdown nbs/index.ipynb --output-dir . --output README
