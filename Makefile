# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both create .venv, install torch and build the extension once (re-done when sources change).
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mminference-installed
SOURCES := setup.py pyproject.toml $(wildcard csrc/*/*.c csrc/*/*.h csrc/*/*.cpp csrc/*/*.cu csrc/*/*.cuh csrc/ext/*/*.cpp)

.PHONY: demo test fuzz clean

$(STAMP): $(SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=69" wheel
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --no-build-isolation -e ".[test]"
	touch $@

demo: $(STAMP)
	$(PY) -m mminference demo

test: $(STAMP)
	$(PY) -m pytest -q

fuzz:
	tests/fuzz/run_fuzz.sh

clean:
	rm -rf build mminference/_C*.so *.egg-info tests/fuzz/build
