# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv, install torch 2.13.0 (CPU) before anything that depends on it, then bwsk.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast test-installed clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/bwsk-demo

# Everything, slow sweeps included (what CI runs). --dist loadfile keeps a file's tests on one worker, so a
# module-scoped fixture (the torchrun jobs, the OpInfo harvest, the experiment grid) runs once, not once per worker.
test: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

# The edit-test loop: leaves out the tests marked slow (full-size models, long sweeps) and the OpInfo sweep.
test-fast: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not slow and not opinfo"

# The suite against a wheel installed outside the repository (not the editable copy).
test-installed: setup
	rm -rf build/installed && $(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w build/installed .
	$(BIN)/python -m pip install --quiet --no-deps --target build/installed/site build/installed/bwsk-*.whl
	cd build/installed && PYTHONPATH=$(CURDIR)/build/installed/site $(CURDIR)/$(BIN)/python -m pytest -n 2 --dist loadfile -q -p no:cacheprovider \
		-c $(CURDIR)/pyproject.toml --rootdir $(CURDIR) $(CURDIR)/tests

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
