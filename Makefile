# zhongtai: the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
STACK := deploy/local/stack.sh
VENV := .stack/venv
CARGO ?= cargo

.PHONY: help demo chaos fuzz test test-rust test-py lint fmt build bench stack-up stack-down stack-status stack-logs topics clean-stack

help:
	@echo "make demo          the whole pipeline on generated traffic, then the KPI report (DEMO_ARGS=...)"
	@echo "make test          bring the local stack up, then fmt, clippy and every test"
	@echo "make bench         criterion benchmarks (benches/)"
	@echo "make chaos         the fault matrix on the local stack (about 20 min; empties the local broker; docs/reliability.md)"
	@echo "make fuzz          each cargo-fuzz target for FUZZ_SECONDS (120)"
	@echo "make stack-up|stack-down|stack-status|stack-logs"
	@echo "make clean-stack   stop the stack and forget the local broker's topics and records"

stack-up:
	$(STACK) up

stack-down:
	$(STACK) down

stack-status:
	$(STACK) status

stack-logs:
	$(STACK) logs

build:
	$(CARGO) build --workspace --locked

# The main job: `zt demo` brings the local stack up (deploy/local/stack.sh), creates a
# fresh set of topics and a fresh ClickHouse database (zhongtai_demo), starts ingest, the
# three processors and the sink, posts a seeded month of e-commerce traffic over HTTP,
# waits until the pipeline has drained and prints the KPI report (docs/demo.md).
DEMO_ARGS ?=
demo: build
	./target/debug/zt demo --html .stack/demo/report.html $(DEMO_ARGS)

# The fault matrix (docs/reliability.md): the whole pipeline once per fault (kill -9 of
# every component at 10/50/90 %, broker and ClickHouse restarts and cut-offs) plus the
# negative control; the results table goes to .stack/chaos/results.md. Each run starts on
# an empty local broker (like `make clean-stack`, the local broker's topics are lost).
CHAOS_ARGS ?=
chaos: build stack-up
	mkdir -p .stack/chaos
	./target/debug/zt chaos --fresh-broker --markdown .stack/chaos/results.md $(CHAOS_ARGS)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

test-py:
	$(VENV)/bin/python -m pytest -q tests/py

test-rust:
	@if command -v cargo-nextest >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --locked --profile ci; \
	else \
		$(CARGO) test --workspace --locked; \
	fi

# The README's test command: installs and starts what the tests need, then runs them all.
# Rust first: it builds target/debug/zt, which the Python checks of the Helm chart run.
test: stack-up lint test-rust test-py

bench:
	$(CARGO) bench -p zt-benches

# Fuzzing (docs/fuzzing.md): each cargo-fuzz target for FUZZ_SECONDS, starting from the
# kept seeds and regressions. cargo-fuzz is installed when missing; the stable toolchain
# builds with RUSTC_BOOTSTRAP=1 (libFuzzer's sanitizer flags). A finding stops the run and
# is written to fuzz/artifacts/<target>/: fix it, then keep it in fuzz/regressions/<target>/
# (tests/it/fuzz_regressions.rs replays every kept input in `make test`).
FUZZ_SECONDS ?= 120
FUZZ_TARGETS := wire_decode ingest_body
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t regressions/$$t && \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t corpus/$$t seeds/$$t regressions/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 || exit 1; \
	done

# Forget every topic and record of the local broker (its SQLite file grows with every demo
# run and test run; tansu gets slower as it grows). ClickHouse's data is kept.
clean-stack:
	$(STACK) down
	rm -f .stack/tansu/tansu.db .stack/tansu/tansu.db-shm .stack/tansu/tansu.db-wal
	rm -rf .stack/demo

topics: build
	./target/debug/zt topics create
