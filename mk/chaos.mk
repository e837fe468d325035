# `make chaos`: a long chaos round (bench/chaos.py, docs/reliability.md). The CI-sized round runs in
# `make test` (tests/test_chaos.py). CHAOS_ARGS adds options, e.g. CHAOS_ARGS="--rotate rename,copytruncate".
CHAOS_KILLS ?= 500
CHAOS_ARGS ?=

chaos: venv
	$(BIN)/python bench/chaos.py --kills $(CHAOS_KILLS) --writers 2 --progress 50 $(CHAOS_ARGS)
