# Everything installs from nothing: `make demo` and `make test` both run `make setup` first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-done

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast smoke-presets report-screenshot clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: the machine's local CPU wheel (a looser range would pull GBs of CUDA)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	@# bubblewrap gives the code sandbox its strongest isolation; without it the sandbox falls back to rlimits.
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) ; } || \
	  echo "note: bubblewrap not installed (install the 'bubblewrap' package for the strongest sandbox)"
	@touch $@

demo: setup
	$(BIN)/pidistill demo

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

smoke-presets: setup
	$(BIN)/pidistill smoke

# Screenshot the latest run's report.html in headless Chromium (installs Debian's chromium if missing).
report-screenshot: setup
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	$(BIN)/pidistill report --screenshot report.png

clean:
	rm -rf $(VENV) runs .pytest_cache
