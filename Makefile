# zhongtai: the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
STACK := deploy/local/stack.sh
VENV := .stack/venv
CARGO ?= cargo

.PHONY: help demo test test-rust test-py lint fmt build bench stack-up stack-down stack-status stack-logs topics clean-stack

help:
	@echo "make demo          the whole pipeline on generated traffic, then the KPI report (DEMO_ARGS=...)"
	@echo "make test          bring the local stack up, then fmt, clippy and every test"
	@echo "make bench         criterion benchmarks (benches/)"
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

# Forget every topic and record of the local broker (its SQLite file grows with every demo
# run and test run; tansu gets slower as it grows). ClickHouse's data is kept.
clean-stack:
	$(STACK) down
	rm -f .stack/tansu/tansu.db .stack/tansu/tansu.db-shm .stack/tansu/tansu.db-wal
	rm -rf .stack/demo

topics: build
	./target/debug/zt topics create
