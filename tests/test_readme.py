"""The README's two commands are the ones CI and users run."""

import re
import subprocess

from conftest import ROOT


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make course" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_every_make_command_in_the_readme_has_a_target():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    mentioned = set(re.findall(r"\bmake ([a-z]+)\b", readme))
    assert {"course", "test", "labs", "collect", "autograde", "feedback", "grades"} <= mentioned
    for target in mentioned:
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"the README says `make {target}`, but the Makefile has no such target"


def test_cpu_only_set_up_adds_pytorchs_cpu_index_and_only_when_asked():
    def install_command(*variables: str) -> str:
        # -n prints the recipe without running it; -B prints it even when .venv is built.
        plan = subprocess.run(["make", "-n", "-B", "setup", *variables], cwd=ROOT, capture_output=True, text=True, check=True)
        (line,) = [line for line in plan.stdout.splitlines() if "-r requirements.txt" in line]
        return line

    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in install_command("CPU_ONLY=1")
    assert "--extra-index-url" not in install_command()


def test_the_handout_has_the_course_but_not_its_answers(tmp_path):
    """The README's `git archive` command for students: labs and what they run on, no solutions or tests."""
    import shlex
    import zipfile

    import pytest

    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    (command,) = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("git archive")]
    args = [arg if not arg.startswith("--output=") else f"--output={tmp_path / 'handout.zip'}" for arg in shlex.split(command)]
    subprocess.run(args, cwd=ROOT, check=True)
    with zipfile.ZipFile(tmp_path / "handout.zip") as handout:
        names = set(handout.namelist())
        assert not [name for name in names if name.startswith(("solutions/", "tests/"))]
        labs = sorted(path.name for path in (ROOT / "labs").iterdir() if path.is_dir())
        needed = {"Makefile", "requirements.txt", "pyproject.toml", "nbgrader_config.py", "shared/__init__.py",
                  "data/manifest.json", "weights/manifest.json", *(f"labs/{lab}/{lab}.ipynb" for lab in labs)}
        assert needed <= names, f"the handout lacks {sorted(needed - names)}"
        for name in names:
            if name.endswith(".ipynb"):
                text = handout.read(name).decode()
                assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, f"{name} holds answers"
