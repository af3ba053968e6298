"""The README's two commands are the ones CI and users run."""

import subprocess

from conftest import ROOT


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make course" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_makefile_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("course:", "test:", "labs:", "collect:", "autograde:", "grades:", "benchmark:"):
        assert f"\n{target}" in makefile


def test_cpu_only_set_up_adds_pytorchs_cpu_index_and_only_when_asked():
    def install_command(*variables: str) -> str:
        # -n prints the recipe without running it; -B prints it even when .venv is built.
        plan = subprocess.run(["make", "-n", "-B", "setup", *variables], cwd=ROOT, capture_output=True, text=True, check=True)
        (line,) = [line for line in plan.stdout.splitlines() if "-r requirements.txt" in line]
        return line

    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in install_command("CPU_ONLY=1")
    assert "--extra-index-url" not in install_command()
