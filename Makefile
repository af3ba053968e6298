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

.PHONY: course course-instructor test setup benchmark clean labs collect autograde feedback grades benchmark-grading

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

# What the tests need beyond PyPI: bubblewrap (the grading sandbox), a PostgreSQL server
# (tests/test_grading.py starts its own) and Chromium (tests/test_browser.py drives it with
# Playwright). Installed with apt as root; otherwise the exact command.
SYSTEM_STAMP := $(VENV)/.installed-system
SYSTEM_PACKAGES := postgresql bubblewrap chromium
$(SYSTEM_STAMP): $(STAMP)
	@if command -v bwrap >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && id postgres >/dev/null 2>&1 \
		&& { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(SYSTEM_PACKAGES) (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null || exit 1; \
	else \
		echo "the tests need bubblewrap, PostgreSQL and Chromium: run  sudo apt-get update && sudo apt-get install -y $(SYSTEM_PACKAGES)  then make test again"; exit 1; \
	fi
	@touch $(SYSTEM_STAMP)

# The student's JupyterLab shows nbgrader's Validate button and none of the instructor's tools
# (jupyter/student/README.md); course-instructor shows them all.
AS_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)  # JupyterLab refuses root (a container, say) without it

course: setup
	PATH="$(BIN):$$PATH" JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter/student" $(BIN)/jupyter lab labs/ $(AS_ROOT)

course-instructor: setup
	PATH="$(BIN):$$PATH" $(BIN)/jupyter lab $(AS_ROOT)

test: $(TEST_STAMP) $(SYSTEM_STAMP)
	$(RUN) $(BIN)/python -m pytest

benchmark: setup
	$(RUN) $(BIN)/python benchmarks/foundation.py
	$(RUN) $(BIN)/python benchmarks/fast_sampling.py
	$(RUN) $(BIN)/python benchmarks/tune_grid.py
	$(RUN) $(BIN)/python benchmarks/guidance.py
	$(RUN) $(BIN)/python benchmarks/distillation.py
	$(RUN) $(BIN)/python benchmarks/flow_matching.py
	$(RUN) $(BIN)/python benchmarks/sample_speed.py

# Serial nbgrader against the parallel, sandboxed grader on a synthetic class (LAB, STUDENTS=40 by default).
benchmark-grading: setup
	$(RUN) $(BIN)/python benchmarks/grading.py $(if $(LAB),--lab $(LAB)) $(if $(STUDENTS),--students $(STUDENTS))

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

# Grades a whole class in parallel and sandboxed (grading/, README "Grading a class of hundreds").
# The database URL travels in GRADING_DB_URL, and the recipe is not echoed: no password in the terminal.
GRADING_ENV = GRADING_DB_URL='$(DB)' SCHEDULER='$(SCHEDULER)' WORKERS='$(WORKERS)' FORCE='$(FORCE)' \
	UNSANDBOXED='$(UNSANDBOXED)' MEMORY_LIMIT='$(MEMORY_LIMIT)' MAX_NOTEBOOK_MB='$(MAX_NOTEBOOK_MB)'
autograde: setup
	@test -n "$(LAB)" || { echo "usage: make autograde LAB=01_sampling|all [FROM=submissions.zip] [DB=postgresql+psycopg://...] [SCHEDULER=tcp://HOST:8786] [FORCE=1]"; exit 2; }
	@$(RUN) $(GRADING_ENV) $(BIN)/python -m grading autograde $(LAB) $(if $(FROM),--from "$(FROM)")

# Feedback pages to hand back: scores, visible checks and messages, no hidden tests (see nbgrader_config.py).
feedback: setup
	@test -n "$(LAB)" || { echo "usage: make feedback LAB=01_sampling"; exit 2; }
	@$(RUN) GRADING_DB_URL='$(DB)' $(BIN)/nbgrader generate_feedback $(LAB) --force

grades: setup
	@$(RUN) GRADING_DB_URL='$(DB)' $(BIN)/nbgrader export --to grades.csv
	@echo "wrote grades.csv"
