# The two commands of the README: `make demo` (main job) and `make test` (all tests).
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test nbtest pytest export clean-nbs docs notebooks gpu-check screenshot browser

$(STAMP): requirements.txt setup.py settings.ini
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/glancesvdd demo

# tests/test_live_lab.py drives Debian's chromium through Debian's chromedriver (Selenium downloads nothing): installed
# here once when missing and apt-get can be used; otherwise (or if the install fails) that test skips and says how to install.
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver (apt-get) for tests/test_live_lab.py"; \
	    { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	      || echo "could not install chromium: tests/test_live_lab.py will skip"; \
	  else echo "no chromium/chromedriver: tests/test_live_lab.py will skip (sudo apt-get install chromium chromium-driver)"; fi; \
	fi

# Sync/clean check (tests/test_nbdev_sync.py), notebook checks (nbdev_test), then pytest (the live browser test included).
# Without a GPU, Triton runs 22a's kernels in its interpreter, which must be chosen before Triton is first imported in a worker.
test: $(STAMP) browser
	OMP_NUM_THREADS=1 TRITON_INTERPRET=$$($(BIN)/python -c "import torch; print(int(not torch.cuda.is_available()))") \
	  $(BIN)/nbdev_test --n_workers 2 --timing --flags slow
	$(BIN)/python -m pytest tests -q -ra

export: $(STAMP)
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

# The library notebooks executed and written back with their outputs (what GitHub shows), then cleaned of metadata
notebooks: $(STAMP)
	$(BIN)/python -c "import sys; from glancesvdd.docs import refresh_outputs; sys.exit(any(e for _, e in refresh_outputs()))"
	$(BIN)/nbdev_clean

# The notebooks, executed with their widget state, as a static HTML site in docs/_site (no Quarto; needs node + npm)
docs: $(STAMP)
	$(BIN)/glancesvdd docs

# README.md is nbs/index.ipynb as Markdown (nbdev_readme needs Quarto, which these machines lack)
readme: $(STAMP)
	$(BIN)/jupyter nbconvert --to markdown nbs/index.ipynb --output-dir . --output README

# The README's picture of the explorer: tests/test_live_lab.py's explorer test, which trains smoke-size runs in JupyterLab and
# moves the explorer in headless Chromium, writes its last view there (needs Debian's chromium and chromium-driver; .ci/run installs them)
screenshot: $(STAMP)
	GLANCESVDD_SCREENSHOT=$(CURDIR)/nbs/images/explorer_live.png $(BIN)/python -m pytest tests/test_live_lab.py -q -ra -k test_explorer_live

# The GPU check of issue 14: correctness on CUDA, throughput at the papers' settings, the speed options, hours per category.
# Runs with the machine's own python3 (it needs torch and the scientific stack, no venv, no papermill/nbdev) in at most 8 min;
# writes $(GPU_CHECK_OUT)/$(GPU_CHECK_NAME).json and .md (e.g. `make gpu-check GPU_CHECK_NAME=gpu_h200`).
GPU_PYTHON ?= python3
GPU_CHECK_OUT ?= benchmarks/results
GPU_CHECK_NAME ?= gpu_check
gpu-check:
	PYTHONUNBUFFERED=1 $(GPU_PYTHON) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) --name $(GPU_CHECK_NAME)
