# The two commands of the README: `make up` (install what is missing, start the local gateway
# example) and `make test` (install what the tests need, run them all).
EXAMPLE ?= examples/local-gateway

.PHONY: up test install lint

up: install
	.venv/bin/waymesh up -f $(EXAMPLE)

test:
	scripts/test.sh

install:
	scripts/install.sh

lint:
	.venv/bin/ruff check src tests benchmarks
