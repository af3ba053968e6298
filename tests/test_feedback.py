"""Grading and feedback details that the six labs cannot show: warnings, and hidden checks that fail.

A one-exercise course is built in a temporary folder with the repository's
nbgrader_config.py, autograded, and turned into feedback HTML, the way `make autograde`
and `make feedback` do it. Its hidden checks warn, and fail in each of the ways a
traceback could quote them. tests/test_labs.py checks the feedback of the six real labs.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat
import pytest
from test_labs import nbgrader

LAB = "00_tiny"
ANSWER = '''def double(x):
    """Twice x."""
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION'''
CHECK = '''"""Checks double."""
assert double(2) == 4, "double(2) should be 4"
print("visible check passed")
### BEGIN HIDDEN TESTS
import warnings
warnings.warn("a warning raised by a hidden check")  # hidden line: in a warning
secret_input = 21  # hidden line: set up
assert double(secret_input) == 42, "double is wrong on another input"  # hidden line: failing
### END HIDDEN TESTS'''
CHECK_IN_A_FUNCTION = '''"""Checks double on negative numbers."""
student_double = double
try:
    assert double(0) == 0, "double(0) should be 0"
    ### BEGIN HIDDEN TESTS
    def reference_check(value):  # hidden line: a helper
        assert student_double(value) == value + value, "double is wrong on a negative number"  # hidden line: in the helper
    reference_check(-3)  # hidden line: calls the helper
    ### END HIDDEN TESTS
finally:
    double = student_double'''
HIDDEN_LINES = [line.split("#")[0].strip() for source in (CHECK, CHECK_IN_A_FUNCTION)
                for line in source.splitlines() if "# hidden line" in line]
STUDENTS = {
    # right, written differently from the reference, and triggering a harmless warning
    "right": 'import warnings\n\ndef double(x):\n    warnings.warn("a harmless warning from the answer")\n    return x + x',
    "slip": "def double(x):\n    return x * x  # right for 2 (and 0), wrong elsewhere",
    "untouched": None,  # the released stub
}


INTRO = r"""### Exercise 1 · Doubling (2 points)

Write `double`, so that $f(x) = 2x$, and so that summed over a batch
$$\sum_i f(x_i) = 2 \sum_i x_i .$$
A code span such as `price = "$5"` stays code."""


def nbgrader_cell(cell, **metadata):
    cell.metadata["nbgrader"] = {"schema_version": 3, "task": False, "solution": False, "grade": False, "locked": False, **metadata}
    return cell


def feedback_text(root: Path, student: str) -> str:
    """The feedback page as a student reads it: tags removed, entities decoded."""
    page = (root / "feedback" / student / LAB / f"{LAB}.html").read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", page))


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_course")
    source = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell(INTRO),
        nbgrader_cell(nbformat.v4.new_code_cell(ANSWER), solution=True, grade_id="double"),
        nbgrader_cell(nbformat.v4.new_code_cell(CHECK), grade=True, locked=True, points=1, grade_id="check_double"),
        nbgrader_cell(nbformat.v4.new_code_cell(CHECK_IN_A_FUNCTION), grade=True, locked=True, points=1, grade_id="check_negative"),
    ])
    source.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (root / "solutions" / LAB).mkdir(parents=True)
    nbformat.write(source, root / "solutions" / LAB / f"{LAB}.ipynb")
    nbgrader("generate_assignment", LAB, "--force", root=root)
    for student, answer in STUDENTS.items():
        notebook = nbformat.read(root / "labs" / LAB / f"{LAB}.ipynb", as_version=4)
        if answer is not None:
            notebook.cells[1].source = answer
        (root / "submitted" / student / LAB).mkdir(parents=True)
        nbformat.write(notebook, root / "submitted" / student / LAB / f"{LAB}.ipynb")
    nbgrader("autograde", LAB, "--force", root=root)  # one process for all: it adds the students to the gradebook
    nbgrader("generate_feedback", LAB, "--force", root=root)
    return root


def test_the_autograded_notebook_holds_the_hidden_checks(course):
    """What the feedback must hide is really there: the hidden checks ran and failed for the slip."""
    notebook = (course / "autograded" / "slip" / LAB / f"{LAB}.ipynb").read_text()
    assert "secret_input = 21" in notebook and "reference_check(-3)" in notebook
    assert "double is wrong on another input" in notebook


@pytest.mark.parametrize("student", STUDENTS)
def test_feedback_never_shows_hidden_checks(course, student):
    text = feedback_text(course, student)
    for line in HIDDEN_LINES:
        assert line not in text, f"the feedback for {student} shows a hidden line: {line}"
    assert "HIDDEN TESTS" not in text
    assert "hidden checks ran here" in text


def test_warnings_cost_no_points(course):
    """nbgrader zeroes a test cell that writes to stderr; warnings go to stdout, so a right answer keeps its points
    although it warns, and so does the hidden check."""
    text = feedback_text(course, "right")
    assert re.search(r"Score: 2\.0 / 2\.0", text), "a right answer should score 2 / 2"
    assert "UserWarning: a harmless warning from the answer" in text  # still shown


def test_feedback_keeps_scores_visible_checks_and_messages(course):
    right, slip, untouched = (feedback_text(course, student) for student in ("right", "slip", "untouched"))
    assert re.search(r"Score: 2\.0 / 2\.0", right), "a full score should show 2 / 2"
    assert re.search(r"Score: 0\.0 / 2\.0", slip), "the slip fails both hidden checks"
    for text in (right, slip, untouched):
        assert 'assert double(2) == 4, "double(2) should be 4"' in text  # the visible check's code
    assert "visible check passed" in slip  # its output before the hidden part
    assert "AssertionError: double is wrong on another input" in slip
    assert "AssertionError: double is wrong on a negative number" in slip
    assert "return x * x" in slip  # the student's own code, where the slip is
    assert "NotImplementedError" in untouched and "replace this line with your code" in untouched


def test_feedback_names_each_exercise_and_needs_no_network(course):
    """The index says which exercise each score is for, and the math is MathML: no MathJax from a CDN,
    so a page opened offline shows formulas, not raw LaTeX."""
    page = (course / "feedback" / "slip" / LAB / f"{LAB}.html").read_text()
    index = page[page.index('<div id="toc">'):]
    index = index[: index.index("</div>")]
    assert index.count("Exercise 1 · Doubling") == 2 and "Test cell" not in index
    assert re.search(r"Exercise 1 · Doubling</a>\s*\(Score: 0\.0 / 1\.0\)", index)
    assert not re.findall(r"<(?:script|link)[^>]*(?:src|href)=\"(?:https?:)?//", page), "the page loads something from the network"
    assert page.count("<math") == 2 and 'display="block"' in page
    text = feedback_text(course, "slip")
    assert "$f(x) = 2x$" not in text and "\\sum_i" not in text  # no raw LaTeX left
    assert 'price = "$5"' in text  # a dollar inside code is code
