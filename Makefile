# zhongtai: the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
STACK := deploy/local/stack.sh
VENV := .stack/venv
CARGO ?= cargo

.PHONY: help demo test test-rust test-py lint fmt build bench stack-up stack-down stack-status stack-logs topics clean-stack

help:
	@echo "make demo          bring the local stack up and run the platform's main job"
	@echo "make test          bring the local stack up, then fmt, clippy and every test"
	@echo "make bench         criterion benchmarks (benches/)"
	@echo "make stack-up|stack-down|stack-status|stack-logs"

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

# The main job. The end-to-end pipeline demo (generated traffic through ingest, the
# processors and the sink into ClickHouse, then the KPI report) arrives with `zt demo`;
# until then this brings the stack up, checks the configuration and creates the
# platform's topics on the local broker.
demo: stack-up build
	./target/debug/zt config check >/dev/null
	./target/debug/zt topics create
	./target/debug/zt migrate
	@echo
	@echo "zhongtai local stack is up: Kafka on 127.0.0.1:9092, ClickHouse on http://127.0.0.1:8123 (database zhongtai, kpi_* views)."
	@echo "Run the pipeline pieces that exist: ./target/debug/zt ingest, zt process identity, zt process profiles, zt process funnels, zt sink (see README)."
	@echo "The full pipeline demo (zt demo: generate -> ingest -> process -> sink -> KPI report) arrives with a later release."

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

topics: build
	./target/debug/zt topics create
