# The README's two commands: `make bench` and `make test`. Both bootstrap .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch; a bare `torch` pulls several GB of CUDA packages.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test bench parity venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,bench]"
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
