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
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) demo.py --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) --durations=15 tests

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
