# Every target runs with .venv/bin first on PATH, so a notebook's `!python` is the kit's Python.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
unexport VIRTUAL_ENV

.PHONY: venv demo test test-fast doctor lint format notebooks lab bench bench-quick mock clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (paradigm-kit)" >/dev/null
	touch $@

## The main job: the seed's speed comparison (against the bundled mock unless PARADIGM_API_KEY is set).
demo: venv
	$(BIN)/python scripts/demo.py

## The whole test suite: package, scripts, notebooks (nbval + papermill), the browser test; the
## package tests and notebooks also on the other Pythons pyenv has (KIT_OTHER_PYTHONS= to skip).
## Three pytest workers (pytest-xdist): a notebook's run mostly waits on the mock, so three overlap
## on 2 cores; the browser tests stay together on one worker (--dist loadgroup).
PYTEST_WORKERS ?= 3
test: venv
	tests/other_pythons.sh $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

## The same on this Python only.
test-fast: venv
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

## Re-sync the %%writefile cell from scripts/speed_test.py and re-execute every notebook in place.
notebooks: venv
	$(BIN)/python tools/notebooks.py refresh

## The attendee's preflight: Python, packages, the kernel's venv, open files, server and key.
doctor: venv
	$(BIN)/python -m paradigm_kit.doctor

## JupyterLab on the notebooks; as root (containers, cloud notebooks) it needs --allow-root.
lab: venv
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)

mock: venv
	$(BIN)/python scripts/mock_paradigm.py --port 8765

bench: venv
	$(BIN)/python scripts/bench.py --out bench-results

bench-quick: venv
	$(BIN)/python scripts/bench.py --quick --out bench-results

clean:
	rm -rf $(VENV) bench-results .pytest_cache
