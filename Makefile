# ncl-ray: `make train` (install + main job) and `make test` are all a new user needs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: help install browser train test test-fast lint audit constraints tune compare bench bench-hotpaths rehearsal prepare serve tensorboard clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	@echo "installing ncl-ray and its pinned dependencies into $(VENV) (a few minutes the first time; errors are shown)"
	@$(PY) -m venv $(VENV)
	@$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	@$(BIN)/pip install -q --disable-pip-version-check --progress-bar off -e ".[dev]" -c constraints.txt
	@touch $(STAMP) && echo "installed: $(BIN)/ncl-ray"

install: $(STAMP)  ## create .venv and install ncl-ray with its dependencies

train: $(STAMP)  ## the main job: NCL training + evaluation on the built-in dataset (ARGS="key=value ...")
	$(BIN)/ncl-ray train conf/default.yaml $(ARGS)

browser:  ## Debian's chromium for the web-page test (skipped with a reason when it cannot be installed)
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
	  echo "installing Debian's chromium for the browser test (once, about half a minute)" && \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && \
	   apt-get install -y -q chromium >/dev/null 2>&1)) || echo "chromium not installed: the browser test will be skipped")

test: $(STAMP) browser  ## every tier: tests/unit (no Ray), tests/ray (a shared local instance), tests/system
	$(BIN)/python -m pytest -q --durations=15 tests/unit tests/ray tests/system

test-fast: $(STAMP)  ## the unit tier: no Ray, one process, under 2 minutes
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check ncl_ray tests bench

audit: $(STAMP)  ## known vulnerabilities in the installed dependencies (pip-audit; needs the vulnerability service)
	$(BIN)/pip install -q pip-audit
	$(BIN)/pip-audit --progress-spinner off --skip-editable

constraints: $(STAMP)  ## rewrite constraints.txt from the installed versions (after changing pyproject.toml)
	(sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v -e '^ncl-ray' -e '^pip-audit') \
	  > constraints.txt.tmp && mv constraints.txt.tmp constraints.txt

tune: $(STAMP)  ## small Ray Tune sweep on the built-in dataset
	$(BIN)/ncl-ray tune conf/tune_small.yaml $(ARGS)

bench: $(STAMP)  ## benchmarks under bench/, results in bench/out/
	$(BIN)/python -m bench.run_all

bench-hotpaths: $(STAMP)  ## worker threads, loss at 0 iterations, epoch start-up, 1M-gallery evaluation, in one run
	$(BIN)/python -m bench.hotpaths $(ARGS)

compare: $(STAMP)  ## NCL vs plain training, 5 seeds each, one Ray Tune experiment (ARGS="--seeds 3 key=value")
	$(BIN)/ncl-ray compare conf/compare.yaml $(ARGS)

rehearsal: $(STAMP)  ## the CLIP4Clip recipe (ViT-B/32, 12 x 224 px) on CPU on an MSR-VTT-shaped corpus, stage report
	$(BIN)/python -m bench.rehearsal $(ARGS)

prepare: $(STAMP)  ## build the clip cache of a config alone (CONFIG=conf/x.yaml ARGS="key=value ...")
	$(BIN)/ncl-ray prepare $(or $(CONFIG),conf/default.yaml) $(ARGS)

serve: $(STAMP)  ## search a trained run over HTTP and in the browser (RUN=runs/<name>, default: the newest run, PORT=8000)
	@run="$(or $(RUN),$$(ls -td runs/*/results.json 2>/dev/null | head -1 | xargs -r dirname))"; \
	  [ -n "$$run" ] || { echo "no trained run under runs/ (make train first, or RUN=path)"; exit 2; }; \
	  $(BIN)/ncl-ray serve "$$run" --port $(or $(PORT),8000) $(ARGS)

tensorboard: $(STAMP)  ## watch the runs under runs/ (HOST=127.0.0.1 PORT=6006; HOST=0.0.0.0 only if you mean it)
	$(BIN)/tensorboard --logdir runs --host $(or $(HOST),127.0.0.1) --port $(or $(PORT),6006)

clean:  ## remove the venv, generated data and runs
	rm -rf $(VENV) data runs bench/out
