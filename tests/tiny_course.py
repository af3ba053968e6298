"""A three-exercise course in a temporary folder, and the submissions that attack it, for the grading tests.

The checks compare tensors with torch.allclose and use isinstance, as the labs' checks do, so
patching either is an attack on something real. `make_course` writes solutions/, generates
labs/ with nbgrader and creates the gradebook; `submission(answers)` fills the released
notebook's answer cells as a student would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat

LAB = "00_tiny"
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

SETUP = "import torch\nimport numpy as np\nreference_input = torch.arange(5.0)"
REFERENCE = {
    "double": "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
    "square": "def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION",
    "negate": "def negate(x):\n    ### BEGIN SOLUTION\n    return -x\n    ### END SOLUTION",
}
CHECKS = {
    "double": "assert torch.allclose(double(torch.tensor([1.0])), torch.tensor([2.0]))\n"
              "### BEGIN HIDDEN TESTS\nassert isinstance(double(reference_input), torch.Tensor)\n"
              "assert torch.allclose(double(reference_input), reference_input + reference_input)\n### END HIDDEN TESTS",
    "square": "assert torch.allclose(square(torch.tensor([3.0])), torch.tensor([9.0]))\n"
              "### BEGIN HIDDEN TESTS\nassert torch.allclose(square(reference_input), reference_input ** 2)\n### END HIDDEN TESTS",
    "negate": "assert torch.equal(negate(torch.tensor([1.0])), torch.tensor([-1.0]))\n"
              "### BEGIN HIDDEN TESTS\nassert abs(float(negate(reference_input).sum()) + 10.0) < 1e-6\n### END HIDDEN TESTS",
}
RIGHT = {name: source.replace("    ### BEGIN SOLUTION\n", "").replace("\n    ### END SOLUTION", "") for name, source in REFERENCE.items()}
WRONG_DOUBLE = "def double(x):\n    return 3 * x"


def nbgrader_cell(cell, **metadata):
    cell.metadata["nbgrader"] = {"schema_version": 3, "task": False, "solution": False, "grade": False, "locked": False, **metadata}
    return cell


def source_notebook() -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_markdown_cell("Three small exercises."),
             nbgrader_cell(nbformat.v4.new_code_cell(SETUP), locked=True, grade_id="setup")]
    for name in REFERENCE:
        cells.append(nbgrader_cell(nbformat.v4.new_code_cell(REFERENCE[name]), solution=True, grade_id=name))
        cells.append(nbgrader_cell(nbformat.v4.new_code_cell(CHECKS[name]), grade=True, locked=True, points=1,
                                   grade_id=f"check_{name}"))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


def nbgrader(*args: str, root: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    environment = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    environment.pop("NBGRADER_EXECUTION", None)
    result = subprocess.run([str(BIN / "nbgrader"), *args, f"--CourseDirectory.root={root}"],
                            cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def make_course(root: Path, env: dict | None = None) -> Path:
    """solutions/ and labs/ of the tiny lab in `root`, registered in the gradebook (GRADING_DB_URL in `env`, or SQLite)."""
    (root / "solutions" / LAB).mkdir(parents=True)
    nbformat.write(source_notebook(), root / "solutions" / LAB / f"{LAB}.ipynb")
    nbgrader("generate_assignment", LAB, "--force", root=root, env=env)
    return root


def submission(root: Path, answers: dict[str, str]) -> nbformat.NotebookNode:
    """The released notebook with `answers` (by exercise) pasted into its answer cells; the others keep the stub."""
    notebook = nbformat.read(root / "labs" / LAB / f"{LAB}.ipynb", as_version=4)
    for cell in notebook.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution") and grade_id in answers:
            cell.source = answers[grade_id]
    return notebook


def submit(root: Path, student: str, notebook: nbformat.NotebookNode) -> None:
    folder = root / "submitted" / student / LAB
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, folder / f"{LAB}.ipynb")
