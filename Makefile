# The two commands of the README: `make up` (install what is missing, start the local gateway
# example) and `make test` (install what the tests need, run them all).
EXAMPLE ?= examples/local-gateway
LAB ?= examples/sidecar-mesh/lab.yaml

.PHONY: up lab test install lint

up: install
	.venv/bin/waymesh up -f $(EXAMPLE)

# The sidecar-mesh example in the lab (root): returns once it is up; `waymesh lab down` ends it.
lab: install
	.venv/bin/waymesh lab up -f $(LAB) -d

test:
	scripts/test.sh

install:
	scripts/install.sh

lint:
	.venv/bin/ruff check src tests benchmarks
