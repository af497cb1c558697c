# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export SCOPERUN_WORKSPACE ?= $(CURDIR)/workspace

.PHONY: demo test lint unit integration venv engine image gvisor tools bench bench-peers bench-stats clean

demo: image ## sample workspace + the inventory tool run on its case, through scoperun
	$(BIN)/scoperun demo

test: lint image gvisor tools ## lint and types, then the whole suite, integration tests on the real engine included
	$(BIN)/pytest -q

lint: venv ## ruff (bug rules, import order) over the tree and mypy (strict, pydantic plugin) over src/
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: venv tools ## unit tests only (no engine needed)
	$(BIN)/pytest -q tests/unit

integration: image gvisor
	$(BIN)/pytest -q tests/integration

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m compileall -q -j 0 -x '/_images/|/_sample/' src/scoperun  # bytecode now, not on the first `scoperun` (image inputs untouched)
	touch $@

engine: ## install (Debian docker.io) and start the Docker engine when none answers (root only)
	bash scripts/ensure-engine.sh

tools: ## systemd-analyze (checks deploy/'s units), rclone + fuse3 (a bucket mounted as a workspace in the tests), iproute2 + nsenter (the tests' two-node swarm), promtool (deploy/alerts.yml), chromium (the page's browser tests), tmux (the CLI read in a real terminal)
	@missing=""; \
	command -v tmux >/dev/null 2>&1 || missing="$$missing tmux"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v rclone >/dev/null 2>&1 || missing="$$missing rclone"; \
	command -v fusermount3 >/dev/null 2>&1 || missing="$$missing fuse3"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v nsenter >/dev/null 2>&1 || missing="$$missing util-linux"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing (sudo apt-get install$$missing)" >&2; exit 1; fi; \
	fi

image: venv engine ## build the runner and browser images (each skipped when its inputs are unchanged)
	bash scripts/build-images.sh

gvisor: engine ## register gVisor (Debian's runsc) with the engine as runtime "runsc" (root; idempotent)
	@if [ "$$(id -u)" = "0" ]; then bash scripts/install-gvisor.sh; \
	else echo "scoperun: not root, gVisor not installed (sudo bash scripts/install-gvisor.sh)"; fi

bench: image
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/cli.py

bench-peers: image ## print(1) against epicbox, llm-sandbox, docker-py, the CLI and the exec floor (bench extra)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/peers.py

bench-stats: venv ## indexed statistics vs the plan's read-every-file method, 100,000 records
	$(BIN)/python benchmarks/stats.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
