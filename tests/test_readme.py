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
