# ecg2age-dicom: `make run` starts the service, `make test` runs every test.
# Both install first: a .venv with the package and its extras, and the Debian packages the
# service and its tests use (dcmtk, dicom3tools, poppler-utils, fonts-dejavu-core, and
# orthanc as a real PACS, chromium for the console's browser tests).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := dcmtk dicom3tools poppler-utils fonts-dejavu-core orthanc chromium
# Commands that prove each Debian package is present.
DEBIAN_COMMANDS := storescu storescp echoscu dsrdump dsr2html dciodvfy pdftoppm pdftotext Orthanc chromium
# Files that prove the others (fonts-dejavu-core: names outside WinAnsi on the PDF report).
DEBIAN_FILES := /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf

.PHONY: install system-packages run test lint bench clean

install: $(VENV)/.installed system-packages

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,train]'
	touch $@

system-packages:
	@missing=""; for c in $(DEBIAN_COMMANDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	for f in $(DEBIAN_FILES); do [ -f $$f ] || missing="$$missing $$f"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages $(DEBIAN_PACKAGES) (missing:$$missing)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES) >/dev/null; \
	else \
		echo "WARNING: missing$$missing; install the Debian packages '$(DEBIAN_PACKAGES)' as root" \
		     "(sudo apt-get install $(DEBIAN_PACKAGES)); tests that need them will fail." >&2; \
	fi

run: install
	$(BIN)/ecg2age-dicom serve

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m benchmarks.bench_decode
	$(BIN)/python -m benchmarks.bench_model
	$(BIN)/python -m benchmarks.bench_report
	$(BIN)/python -m benchmarks.bench_worker
	$(BIN)/python -m benchmarks.bench_e2e
	$(BIN)/python -m benchmarks.bench_worklist
	$(BIN)/python -m benchmarks.bench_bulk
	$(BIN)/python -m benchmarks.bench_backfill

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
