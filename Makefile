# The two commands of the README:  `make course`  and  `make test`.
# Both create .venv with everything the course needs on first use; nothing needs activating.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# nbgrader runs the `alembic` command of its environment, so its bin/ goes first on PATH.
RUN := PATH="$(BIN):$$PATH" MPLBACKEND=Agg

.PHONY: course test setup benchmark clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else f"Python 3.11 or newer is needed (nbgrader 0.9.6), but $(PYTHON) is {v.major}.{v.minor}: run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

course: setup
	PATH="$(BIN):$$PATH" $(BIN)/jupyter lab labs/

test: setup
	$(RUN) $(BIN)/python -m pytest

benchmark: setup
	$(RUN) $(BIN)/python benchmarks/foundation.py

clean:
	rm -rf $(VENV) .pytest_cache
