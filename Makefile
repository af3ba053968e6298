# The two commands of the README:  `make course`  and  `make test`.
# Both create .venv with everything the course needs on first use; nothing needs activating.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# nbgrader runs the `alembic` command of its environment, so its bin/ goes first on PATH.
RUN := PATH="$(BIN):$$PATH"
# `make course CPU_ONLY=1` (on first set-up) also looks in PyTorch's CPU-only index. Its
# builds carry the pinned versions with a local label (torch 2.14.1+cpu), which pip ranks
# above PyPI's, so on Linux it installs about 0.8 GB instead of the CUDA build's 5 GB.
CPU_ONLY_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX := $(if $(CPU_ONLY),--extra-index-url $(CPU_ONLY_INDEX))

.PHONY: course test setup benchmark clean labs collect autograde feedback grades

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else f"Python 3.11 or newer is needed (nbgrader 0.9.6), but $(PYTHON) is {v.major}.{v.minor}: run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

# Test-only packages (pytest, diffusers as the samplers' reference), on top of the course's.
$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(BIN)/python -m pip install --quiet -r requirements-test.txt
	@touch $(TEST_STAMP)

course: setup
	PATH="$(BIN):$$PATH" $(BIN)/jupyter lab labs/

test: $(TEST_STAMP)
	$(RUN) $(BIN)/python -m pytest

benchmark: setup
	$(RUN) $(BIN)/python benchmarks/foundation.py
	$(RUN) $(BIN)/python benchmarks/fast_sampling.py
	$(RUN) $(BIN)/python benchmarks/tune_grid.py
	$(RUN) $(BIN)/python benchmarks/guidance.py
	$(RUN) $(BIN)/python benchmarks/distillation.py
	$(RUN) $(BIN)/python benchmarks/flow_matching.py
	$(RUN) $(BIN)/python benchmarks/sample_speed.py

clean:
	rm -rf $(VENV) .pytest_cache

# Regenerate labs/ from solutions/ (instructors: after editing a solution notebook).
labs: setup
	@for lab in $$(ls solutions); do $(RUN) $(BIN)/nbgrader generate_assignment $$lab --force --log-level=WARN || exit 1; done
	@echo "labs/ regenerated from solutions/"

# The grading cycle (see the README's instructor section).
collect: setup
	@test -n "$(LAB)" && test -e "$(FROM)" || { echo "usage: make collect LAB=01_sampling FROM=submissions.zip (or a folder of notebooks)"; exit 2; }
	@mkdir -p downloaded/$(LAB)/archive
	cp -r "$(FROM)" downloaded/$(LAB)/archive/
	$(RUN) $(BIN)/nbgrader zip_collect $(LAB) --force

autograde: setup
	@test -n "$(LAB)" || { echo "usage: make autograde LAB=01_sampling"; exit 2; }
	$(RUN) $(BIN)/nbgrader autograde $(LAB) --force

# Feedback pages to hand back: scores, visible checks and messages, no hidden tests (see nbgrader_config.py).
feedback: setup
	@test -n "$(LAB)" || { echo "usage: make feedback LAB=01_sampling"; exit 2; }
	$(RUN) $(BIN)/nbgrader generate_feedback $(LAB) --force

grades: setup
	$(RUN) $(BIN)/nbgrader export --to grades.csv
	@echo "wrote grades.csv"
