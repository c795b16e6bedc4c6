# Two commands on a fresh machine:  `make run`  (set up + run the daemon on the embedded
# defaults: SQLite, offline provider without a key)  and  `make test`  (set up + run the tests).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: install run daemon test check format lint typecheck bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# insightface declares the GUI OpenCV build (opencv-python, needs libGL); its real runtime
	# needs are in pyproject.toml with the headless build, so it goes in without its deps.
	$(PY) -m pip install --quiet --no-deps 'insightface==2.1'
	touch $(STAMP)

install: $(STAMP)

# the main command: daemon + terminal UI (without a terminal, `up` runs the daemon headless)
run: $(STAMP)
	@test -f config.yaml || $(VENV)/bin/dropflow init .
	$(VENV)/bin/dropflow up

daemon: $(STAMP)
	@test -f config.yaml || $(VENV)/bin/dropflow init .
	$(VENV)/bin/dropflow daemon

# the PostgreSQL store tests start a real server (tests/pgserver.py): installed here when missing
# and this is root with apt-get; otherwise those tests skip, saying how to get it
test: $(STAMP)
	$(PY) -m tests.pgserver --ensure
	$(PY) -m pytest -q -p no:cacheprovider

format: $(STAMP)
	$(VENV)/bin/ruff format daemon engine tui tests bench

lint: $(STAMP)
	$(VENV)/bin/ruff format --check daemon engine tui tests bench
	$(VENV)/bin/ruff check daemon engine tui tests bench

# mypy cannot follow the editable install's import hook, so `dropflow.*` would all be Any: it reads
# the code through a folder of links laid out as installed (build/ is ignored by git)
typecheck: $(STAMP)
	rm -rf build/typecheck && mkdir -p build/typecheck/dropflow
	for d in daemon engine tui; do ln -s ../../../$$d build/typecheck/dropflow/$$d; done
	cd build/typecheck && MYPYPATH=. ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml \
		-p dropflow.daemon -p dropflow.engine -p dropflow.tui

check: lint typecheck test

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info build dist
