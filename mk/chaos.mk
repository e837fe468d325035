# `make chaos`: a long chaos round (bench/chaos.py, docs/reliability.md). The CI-sized round runs in
# `make test` (tests/test_chaos.py). CHAOS_ARGS adds options, e.g. CHAOS_ARGS="--rotate rename,copytruncate".
# `make chaos-logrotate`: the same faults against logrotate as operators run it (`*.jsonl` only, rotated
# names outside it, rename and copytruncate every 0.3-2 s, services never paused), checked per line.
CHAOS_KILLS ?= 500
CHAOS_ARGS ?=
CHAOS_LR_KILLS ?= 300
CHAOS_LR_ARGS ?=

.PHONY: chaos-logrotate

chaos: venv
	$(BIN)/python bench/chaos.py --kills $(CHAOS_KILLS) --writers 2 --progress 50 $(CHAOS_ARGS)

chaos-logrotate: venv
	$(BIN)/python bench/chaos.py --mode logrotate --kills $(CHAOS_LR_KILLS) --writers 2 --rate 1000 \
		--progress 50 $(CHAOS_LR_ARGS)

# `make chaos-model`: the model-based lifecycle test (tests/test_lifecycle_model.py) with a longer
# setting than `make test`'s; MODEL_SEED=random for a fresh seed.
MODEL_EXAMPLES ?= 40
MODEL_STEPS ?= 40
MODEL_SEED ?= random

.PHONY: chaos-model

chaos-model: venv
	TELEMETRYD_MODEL_EXAMPLES=$(MODEL_EXAMPLES) TELEMETRYD_MODEL_STEPS=$(MODEL_STEPS) \
		TELEMETRYD_MODEL_SEED=$(MODEL_SEED) $(BIN)/python -m pytest -q -x tests/test_lifecycle_model.py
