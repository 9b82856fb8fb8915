# The README's two commands: `make bench` and `make test`. Both bootstrap .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first, pinned, from wherever pip finds it. That is a CPU build only
# where pip already resolves it to one (e.g. a local CPU wheel in pip's find-links); from
# plain PyPI on Linux it is the CUDA build, several GB of nvidia packages. For the CPU
# build there: make TORCH_INDEX=https://download.pytorch.org/whl/cpu
# TORCH_SPEC, TORCH_INDEX and EXTRAS act when .venv is installed; a change to any of
# them re-runs the install (recorded in .venv/.install-settings). pip keeps what is
# already there, so to swap a torch build for another, `make clean` first.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# Where nvidia-smi is on PATH, moe-bench plans the GPU suite, so JAX must be its CUDA build;
# with the CPU build moe-bench stops rather than time JAX on the CPU. The CUDA 13 wheels
# (`cuda13`) need a driver >= 580; an older driver gets the CUDA 12 ones (`cuda12`).
comma := ,
DRIVER_MAJOR := $(shell nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 | cut -d. -f1)
CUDA_EXTRA := $(if $(DRIVER_MAJOR),$(if $(shell test "$(DRIVER_MAJOR)" -ge 580 2>/dev/null && echo y),cuda13,cuda12))
EXTRAS ?= $(if $(CUDA_EXTRA),$(CUDA_EXTRA)$(comma))test$(comma)bench
STAMP := $(VENV)/.installed
SETTINGS := $(VENV)/.install-settings
PYTEST_ARGS ?=
BENCH_ARGS ?=
PARITY_ARGS ?=

.PHONY: test bench parity venv clean FORCE

venv: $(STAMP)

# Rewritten only when the settings differ from the last install's, so that its date
# makes the install re-run then and only then.
$(SETTINGS): FORCE
	@mkdir -p $(VENV)
	@echo '$(TORCH_SPEC) $(TORCH_INDEX) [$(EXTRAS)]' | cmp -s - $@ || \
	  echo '$(TORCH_SPEC) $(TORCH_INDEX) [$(EXTRAS)]' > $@

FORCE:

$(STAMP): pyproject.toml $(SETTINGS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

# pytest exits 5 when it collects nothing: that is a broken suite, so say so and fail.
test: $(STAMP)
	@$(PY) -m pytest -q -m "not gpu" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)"; exit 1; fi; \
	exit $$rc

bench: $(STAMP)
	$(VENV)/bin/moe-bench $(BENCH_ARGS)

parity: $(STAMP)
	$(VENV)/bin/moe-parity $(PARITY_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
