# The front door: `make demo` and `make test`. Both create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
# Fragments in mk/ add their own targets and append to TEST_DEPS (things tests need installed first).
TEST_DEPS :=

.PHONY: venv test lint typecheck unit demo demo-watch demo-stop clean bench bench-quick bench-patterns chaos

# Two steps: the runtime (what `make demo` needs, a few seconds), then the dev tools for the tests
# (mypy, ruff, pytest, hypothesis: most of the install time).
$(VENV)/.runtime: pyproject.toml scripts/ensure-system-deps.sh
	@echo "== installing telemetryd into $(VENV) (first run only)"
	./scripts/ensure-system-deps.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[systemd]'
	touch $@
	@echo "== installed: $(BIN)/telemetryd"

$(VENV)/.installed: $(VENV)/.runtime
	@echo "== installing the test tools into $(VENV)"
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,systemd]'
	touch $@

venv: $(VENV)/.installed

include $(wildcard mk/*.mk)

lint: venv
	$(BIN)/ruff check daemon tests bench scripts
	$(BIN)/ruff format --check daemon tests bench scripts

typecheck: venv
	$(BIN)/mypy daemon/telemetryd

unit: venv $(TEST_DEPS)
	# the C accelerator must have built (tests/test_stage0.py); a user without a compiler still gets the pure path
	TELEMETRYD_REQUIRE_ACCEL=1 $(BIN)/python -m pytest -q tests

test: lint typecheck unit

clean: demo-stop
	rm -rf $(VENV) demo .build bench/out

# The daemon and a writer keep running after `make demo` (scripts/demo.py says how to stop them);
# DEMO_SECONDS=N makes it refresh the view for N seconds and stop both.
demo: $(VENV)/.runtime
	$(BIN)/python scripts/demo.py start

demo-watch: $(VENV)/.runtime
	$(BIN)/python scripts/demo.py watch

# Plain python3: stopping needs only the standard library, and must work after the venv is gone.
demo-stop:
	@$(PY) scripts/demo.py stop

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
