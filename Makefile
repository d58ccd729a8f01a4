# The README's two commands: `make demo` and `make test`. Each creates .venv if missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml scripts/setup_venv.sh | sha256sum | cut -c1-12)
QUICK   ?=
FULL    ?=
DEMO_OUT ?= demo_out

.PHONY: demo test venv inspect-deps bench clean

$(STAMP): pyproject.toml scripts/setup_venv.sh
	bash scripts/setup_venv.sh $(PY) $(VENV)
	touch $(STAMP)

venv: $(STAMP)

# FiftyOne's offline mongod + headless chromium (see shared notes / README "Inspect").
inspect-deps: $(STAMP)
	bash scripts/setup_inspect.sh $(VENV)

demo: $(STAMP)
	$(BIN)/curator demo --out $(DEMO_OUT) $(if $(QUICK),--quick,) $(if $(FULL),--full,)

test: $(STAMP) inspect-deps
	$(BIN)/python -m pytest -q -ra tests

bench: $(STAMP)
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) curator_store .deps
