# novaops: one-command entry points. See README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATE_DIR ?= dev-cluster
NODES ?= 3
PYTEST_ARGS ?=

.PHONY: install bytecode demo demo-down test lint fmt protos bench clean
SOURCES := cli client controller devcluster executor pki proto

$(STAMP): pyproject.toml
	./scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev]'
	$(MAKE) --no-print-directory bytecode
	touch $(STAMP)

# An editable install leaves our modules uncompiled; where Python may not write
# bytecode (PYTHONDONTWRITEBYTECODE, read-only checkouts) every CLI run would then
# compile them again (~170 ms). Stale files are ignored by Python (mtime check).
bytecode:
	$(BIN)/python -m compileall -q $(SOURCES) >/dev/null

install: $(STAMP)

# A 3-node simulated cluster on the embedded store, then the cluster view.
demo: install
	@$(BIN)/novaops dev down --state-dir $(STATE_DIR) >/dev/null 2>&1 || true  # a cluster left from an earlier demo
	$(BIN)/novaops dev up --nodes $(NODES) --state-dir $(STATE_DIR) --detach
	$(BIN)/novaops --config $(STATE_DIR)/client.toml cluster status
	$(BIN)/novaops --config $(STATE_DIR)/client.toml node list
	@echo "# the simulated nodes carry faults; try: novaops --config $(STATE_DIR)/client.toml diag host --all"

demo-down: install
	$(BIN)/novaops dev down --state-dir $(STATE_DIR)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/typecheck.py
	$(BIN)/python scripts/gen_protos.py --check

test: lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

protos: install
	$(BIN)/python scripts/gen_protos.py

bench: install bytecode
	$(BIN)/python bench/run.py

clean:
	@$(BIN)/novaops dev down --state-dir $(STATE_DIR) >/dev/null 2>&1 || true
	rm -rf $(VENV) build *.egg-info
