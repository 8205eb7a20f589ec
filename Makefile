# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of TensorFlow by default; `make install EXTRAS=gpu,test` on a GPU machine.
EXTRAS ?= cpu,test
DEMO_OUT ?= demo_out
PYTEST_WORKERS ?= 2

.PHONY: install demo test bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# The build backend's notes (setuptools' editable-install banner) go to a log, shown on failure.
	$(PY) -m pip install --quiet --upgrade pip 2> $(VENV)/install.log || (cat $(VENV)/install.log; exit 1)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]" 2>> $(VENV)/install.log || (cat $(VENV)/install.log; exit 1)
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) demo.py --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) --durations=15 tests

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
