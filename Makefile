# certfactory — see README.md. Every target that runs Python first runs
# scripts/bootstrap.sh (system packages, .venv), which is silent when all is set.

BIN := .venv/bin

DEMO_ARGS ?=
PYTEST_ARGS ?=
LOADTEST_ARGS ?=
CHAOS_ARGS ?=

.DEFAULT_GOAL := demo
.PHONY: demo test chaos loadtest bootstrap schemas clean

demo: bootstrap
	$(BIN)/certfactory demo $(DEMO_ARGS)

test: bootstrap
	$(BIN)/pytest -q $(PYTEST_ARGS)

chaos: bootstrap
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)

loadtest: bootstrap
	$(BIN)/certfactory loadtest $(LOADTEST_ARGS)

bootstrap:
	@bash scripts/bootstrap.sh

schemas: bootstrap
	$(BIN)/python -m schemas.export

clean:
	rm -rf var/ bench/out/
