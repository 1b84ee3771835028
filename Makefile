# prefmatch — set-up-and-go targets.  `make demo` and `make test` each work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
OUT    ?= out

.PHONY: install test test-slow test-all demo docs figures bench clean

install: $(STAMP)

# torch first, pinned: the CPU build is served for this pin (an unpinned torch pulls CUDA wheels)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[llm,test,docs]'
	touch $(STAMP)

test: install
	$(VENV)/bin/pytest -q -m "not slow and not gpu"

test-slow: install
	$(VENV)/bin/pytest -q -m "slow"

test-all: install
	$(VENV)/bin/pytest -q

demo: install
	mkdir -p $(OUT)
	$(VENV)/bin/prefmatch verify | tee $(OUT)/verify.txt

clean:
	rm -rf $(VENV) $(OUT) docs/_build .pytest_cache
