# unlearnctl: set-up, tests and the demo. Every target creates .venv first when needed.
#   make demo   forget class 2 of the built-in ddpm-digits model, then evaluate the run
#   make test   lint (ruff, import contracts, mypy), then the test suite (what .ci/run runs)
#   make docs   regenerate docs/cli.md and the hook reference of docs/plugins.md

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.unlearnctl-installed
TORCH := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# Passive OpenMP waiting: spinning threads make torch 10-20x slower when the cores are shared.
OMP_WAIT_POLICY ?= PASSIVE
export OMP_WAIT_POLICY
DEMO_RUN := runs/demo-$(shell date -u +%Y%m%dT%H%M%SZ)

.PHONY: venv lint browser test demo docs clean

venv: $(STAMP)

# Re-installs when pyproject.toml changes; otherwise a no-op.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(TORCH)
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

# ruff; the import contracts of pyproject.toml (layers, built-ins on the public API; docs/architecture.md);
# mypy on the public API (the files listed in pyproject.toml).
lint: venv
	$(BIN)/ruff check src tests plugins
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/mypy

# Debian's Chromium for tests/test_report_browser.py (the report in a headless browser). Installs it as root
# (CI); otherwise says so and goes on: the browser test then skips, naming the reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	else echo "make browser: chromium is not installed and this is not root: tests/test_report_browser.py will skip" >&2; fi; }

# pytest's exit code 5 means it collected no test: a failure, said plainly.
test: lint browser
	@$(BIN)/pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit code 5): that is a failure" >&2; fi; \
	exit $$rc

demo: venv
	$(BIN)/unlearnctl forget --classes 2 --out $(DEMO_RUN)
	$(BIN)/unlearnctl eval $(DEMO_RUN)

# docs/cli.md and the hook reference in docs/plugins.md are generated from the code.
docs: venv
	$(BIN)/typer unlearnctl.cli.app utils docs --name unlearnctl --title "unlearnctl command reference" \
		--output docs/cli.md
	$(BIN)/python -m unlearnctl.plugins docs/plugins.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build src/*.egg-info
