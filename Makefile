# Two entry points for a fresh machine: `make demo` and `make check` (what CI runs).
# Both create .venv, install torch 2.13.0 (CPU) before anything that depends on it, then bwsk.
# --no-compile: pip would byte-compile every file of torch and transformers (a minute of a 2-core machine); Python
# compiles the modules a run imports on first use instead, and keeps them: so these targets let it write bytecode
# (with PYTHONDONTWRITEBYTECODE set, every process would compile torch again, 10 s each).
unexport PYTHONDONTWRITEBYTECODE
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo check test test-fast test-installed clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile torch==2.13.0
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/bwsk-demo

# Every test, the sweeps included: what CI runs (.ci/run). --dist loadfile keeps a file's tests on one worker,
# so a module-scoped fixture (a torchrun job, the OpInfo harvest, the experiment grid) runs once, not once per worker.
check: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

# The suite without the sweeps (torchrun jobs, full-size models, benchmark scripts end to end, depth, zoo and
# OpInfo sweeps, fresh processes, the wheel): under 5 minutes on 2 cores, setup included.
test: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not sweep and not opinfo"

# The edit-test loop, under a minute: also leaves out the tests marked slow (a second or more each: whole-model
# steps, exports, subprocesses).
test-fast: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not slow and not sweep and not opinfo"

# The suite against a wheel installed outside the repository (not the editable copy).
test-installed: setup
	rm -rf build/installed && $(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w build/installed .
	$(BIN)/python -m pip install --quiet --no-deps --target build/installed/site build/installed/bwsk-*.whl
	cd build/installed && PYTHONPATH=$(CURDIR)/build/installed/site $(CURDIR)/$(BIN)/python -m pytest -n 2 --dist loadfile -q -p no:cacheprovider \
		-c $(CURDIR)/pyproject.toml --rootdir $(CURDIR) $(CURDIR)/tests

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
