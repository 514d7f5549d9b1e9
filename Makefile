# One command to set up and run the default study, one to set up and run the tests.
# Torch is installed first, pinned to the CPU wheel, so that pip never pulls a CUDA build.
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
# Use the workplace's offline MNIST copy when it is there; otherwise budgetnas uses ./data (downloading).
SHARED := $(wildcard ../shared/data/MNIST/raw)
ifneq ($(SHARED),)
export BUDGETNAS_DATA ?= $(abspath ../shared/data)
endif

.PHONY: setup drill search test test-browser test-slow lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,postgres]'
	touch $@

setup: $(VENV)/.installed

drill: setup  ## the main job: a short drill on MNIST, budget -> verified module (low fidelity, ~10 min on 2 cores)
	$(BIN)/budgetnas drill --name quick-drill --budget 8000 --hours 0.17 --epochs 3 --subset 10000 --seeds 2
	$(BIN)/budgetnas status --study quick-drill

search: setup  ## a small default study on MNIST (a few minutes on 2 cores)
	$(BIN)/budgetnas search --config studies/quick/study.toml
	$(BIN)/budgetnas status --study quick

test: setup  ## the default suite: synthetic data only, no network
	$(BIN)/pytest -q

test-browser: setup  ## optuna-dashboard in headless Chromium (needs: apt-get install chromium)
	$(PY) -m pip install -q -e '.[test,postgres,browser]'
	$(BIN)/pytest -q -m browser

test-slow: setup  ## real MNIST, minutes
	$(BIN)/pytest -q -m slow

lint: setup
	$(BIN)/ruff check space search baselines tests studies

clean:
	rm -rf $(VENV) studies/*.db
