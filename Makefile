# The front door: `make demo` and `make test`. Both create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
# Fragments in mk/ add their own targets and append to TEST_DEPS (things tests need installed first).
TEST_DEPS :=

.PHONY: venv test lint typecheck unit demo clean bench bench-quick bench-patterns chaos

$(VENV)/.installed: pyproject.toml scripts/ensure-system-deps.sh
	./scripts/ensure-system-deps.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

include $(wildcard mk/*.mk)

lint: venv
	$(BIN)/ruff check daemon tests bench scripts
	$(BIN)/ruff format --check daemon tests bench scripts

typecheck: venv
	$(BIN)/mypy daemon/telemetryd

unit: venv $(TEST_DEPS)
	$(BIN)/python -m pytest -q tests

test: lint typecheck unit

clean:
	rm -rf $(VENV) demo .build bench/out

demo: venv
	./scripts/demo.sh

# Benchmarks print their figures; copy them into docs/benchmarks.md with the date and machine.
bench-patterns: venv
	$(BIN)/python bench/patterns.py

bench-quick: venv
	$(BIN)/python bench/throughput.py --lines 200000 --files 1 16 --runs 1
	$(BIN)/python bench/checkpoint_cost.py --patterns 10 10000 --checkpoints 100

bench: venv bench-patterns
	$(BIN)/python bench/throughput.py --lines 2000000 --files 1 16 256 --runs 3 --profile
	$(BIN)/python bench/checkpoint_cost.py --patterns 10 100000 1000000
	$(BIN)/python bench/latency.py --rate 10000 --seconds 20
	$(BIN)/python bench/many_files.py --files 10000 --idle 30
	$(BIN)/python bench/restart.py --patterns 1000000 --files 10000
	$(BIN)/python bench/restart.py --patterns 100000 --files 10 --runs 1
