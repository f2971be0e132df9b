# Two entry points: `make run` (the main job) and `make test` (the suite). Both create the
# virtual environment on first use, so a fresh clone needs nothing else.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-deps lint bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/linewatch run

# what the suite needs from the system besides Python packages: Debian's chromium (the browser
# tests; Playwright drives it and downloads no browser) and docker-compose (validates the compose
# file). Installed when missing and apt-get can run; otherwise the tests that need them say why
# they skip.
test-deps:
	@docker compose version >/dev/null 2>&1 && have=docker-compose; \
	for pkg in chromium docker-compose; do \
		command -v $$pkg >/dev/null 2>&1 && continue; [ "$$have" = $$pkg ] && continue; \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "make: installing $$pkg (Debian package)"; \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg >/dev/null; } || \
				echo "make: could not install $$pkg; the tests that need it will be skipped"; \
		else echo "make: $$pkg is missing (apt-get install $$pkg as root); the tests that need it will be skipped"; fi; \
	done

test: $(STAMP) test-deps
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.inspector_throughput
