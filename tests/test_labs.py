"""The grading pipeline, for every lab in solutions/.

One temporary course (outside the repository) is built per test session: the
labs are generated from solutions/ there, six kinds of submission per lab are
autograded in parallel (one nbgrader process per student, after the gradebook
and students were created one at a time), feedback is generated, and the
gradebook and the feedback pages are read back.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from conftest import LABS, ROOT, TIMINGS, grade_id

BIN = Path(sys.executable).parent
STUDENTS = ("solution", "untouched", "infinite-loop", "raises", "deleted-test", "edited-test")
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
ENV.pop("NBGRADER_EXECUTION", None)
# A student's notebook is saved, submitted and graded with its outputs. The labs measured
# 0.3-0.8 MB when this limit was set; every figure and animation in them is bounded.
MAX_EXECUTED_NOTEBOOK_BYTES = 2_000_000


def nbgrader(*args: str, root: Path, timeout: int = 900, threads: int | None = None) -> subprocess.CompletedProcess:
    env = ENV if threads is None else {**ENV, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(
        [str(BIN / "nbgrader"), *args, f"--CourseDirectory.root={root}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def answer_cells(notebook):
    return [c for c in notebook.cells if c.get("metadata", {}).get("nbgrader", {}).get("solution")]


def graded_cells(notebook):
    return [c for c in notebook.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade")]


def make_submissions(lab: str, root: Path) -> dict:
    """The six submissions of `lab`, by student id."""
    solution = read(ROOT / "solutions" / lab / f"{lab}.ipynb")
    released = read(root / "labs" / lab / f"{lab}.ipynb")
    first_answer = answer_cells(released)[0]
    first_test = graded_cells(released)[0]

    def with_answers(notebook):
        """The released notebook with the reference answers pasted in, as a student would."""
        answers = {grade_id(c): c.source for c in answer_cells(solution)}
        notebook = nbformat.from_dict(json.loads(json.dumps(notebook)))
        for cell in answer_cells(notebook):
            cell.source = answers[grade_id(cell)]
        return notebook

    submissions = {"solution": with_answers(released), "untouched": released}
    looping = with_answers(released)
    for cell in answer_cells(looping):
        if grade_id(cell) == grade_id(first_answer):
            cell.source = "while True:\n    pass"
    submissions["infinite-loop"] = looping
    raising = with_answers(released)
    for cell in answer_cells(raising):
        if grade_id(cell) == grade_id(first_answer):
            cell.source = "raise RuntimeError('a student error')"
    submissions["raises"] = raising
    deleted = nbformat.from_dict(json.loads(json.dumps(released)))
    deleted.cells = [c for c in deleted.cells if grade_id(c) != grade_id(first_test)]
    submissions["deleted-test"] = deleted
    edited = nbformat.from_dict(json.loads(json.dumps(released)))
    for cell in graded_cells(edited):
        cell.source = "print('all tests pass')"  # a student 'fixing' every test
    submissions["edited-test"] = edited
    return submissions


@pytest.fixture(scope="session")
def course(tmp_path_factory):
    """A course outside the repository: labs generated, every submission autograded."""
    root = tmp_path_factory.mktemp("course")
    shutil.copytree(ROOT / "solutions", root / "solutions")
    for lab in LABS:
        nbgrader("generate_assignment", lab, "--force", root=root)
    for lab in LABS:  # collected as an instructor would: one zip of `<student>_<lab>.ipynb` files
        archive = root / "downloaded" / lab / "archive"
        archive.mkdir(parents=True)
        with zipfile.ZipFile(archive / "submissions.zip", "w") as bundle:
            for student, notebook in make_submissions(lab, root).items():
                bundle.writestr(f"{student}_{lab}.ipynb", nbformat.writes(notebook))
        nbgrader("zip_collect", lab, "--force", root=root)
    (root / "students.csv").write_text("id\n" + "\n".join(STUDENTS) + "\n")
    nbgrader("db", "student", "import", str(root / "students.csv"), root=root)  # one process, not one per student
    jobs = [(lab, student) for lab in LABS for student in STUDENTS]
    seconds = {}

    def autograde(job):
        lab, student = job
        start = time.perf_counter()
        nbgrader("autograde", lab, "--student", student, "--force", root=root, threads=1)
        seconds[job] = time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores: two kernels at once, one thread each
        list(pool.map(autograde, jobs))
    for (lab, student), value in seconds.items():
        TIMINGS[f"{lab}: autograde {student} (1 thread, 2 at once)"] = value
    nbgrader("export", "--to", str(root / "grades.csv"), root=root)
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda lab: nbgrader("generate_feedback", lab, "--force", root=root), LABS))
    return root


def grades(root: Path, lab: str, student: str) -> dict:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        notebook = gradebook.find_submission_notebook(lab, lab, student)
        return {
            "score": notebook.score,
            "max_score": notebook.max_score,
            "needs_manual_grade": notebook.needs_manual_grade,
            "cells": {g.name: (g.score, g.max_score, g.needs_manual_grade) for g in notebook.grades},
        }


def autograded(root: Path, lab: str, student: str) -> nbformat.NotebookNode:
    return read(root / "autograded" / student / lab / f"{lab}.ipynb")


def hidden_test_lines(cell) -> list[str]:
    """The telling lines of a test cell's hidden tests: long enough to be specific, and not also visible."""
    if "### BEGIN HIDDEN TESTS" not in cell.source:
        return []
    before, rest = cell.source.split("### BEGIN HIDDEN TESTS")
    hidden, after = rest.split("### END HIDDEN TESTS")
    visible = {line.strip() for line in (before + after).splitlines()}  # a line may be both hidden and visible
    return [line for line in (l.strip() for l in hidden.splitlines()) if len(line) > 30 and line not in visible]


def test_there_are_labs():
    assert "01_sampling" in LABS


@pytest.mark.parametrize("lab", LABS)
def test_labs_are_generated_from_solutions(course, lab):
    """labs/ is exactly what nbgrader makes of solutions/: regenerate with `make labs`."""
    generated = (course / "labs" / lab / f"{lab}.ipynb").read_text()
    committed = (ROOT / "labs" / lab / f"{lab}.ipynb").read_text()
    assert generated == committed, f"labs/{lab} drifted from solutions/{lab}: run `make labs` and commit"


@pytest.mark.parametrize("folder", ["solutions", "labs"])
def test_notebooks_are_committed_without_outputs(folder):
    notebooks = list((ROOT / folder).glob("*/*.ipynb"))
    assert notebooks
    for path in notebooks:
        for cell in read(path).cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path} has outputs: clear them"


@pytest.mark.parametrize("lab", LABS)
def test_released_lab_hides_solutions_and_hidden_tests(lab):
    released = "\n".join(cell.source for cell in read(ROOT / "labs" / lab / f"{lab}.ipynb").cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in released
    solution = read(ROOT / "solutions" / lab / f"{lab}.ipynb")
    lab_notebook = read(ROOT / "labs" / lab / f"{lab}.ipynb")
    lab_sources = {grade_id(c): c.source for c in lab_notebook.cells}
    for cell in answer_cells(solution):
        hidden = cell.source.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0]
        for line in (l.strip() for l in hidden.splitlines()):
            if len(line) > 12:
                assert line not in lab_sources[grade_id(cell)], f"solution line leaked into the lab: {line}"
        assert "raise NotImplementedError" in lab_sources[grade_id(cell)]
    for cell in graded_cells(solution):
        for line in hidden_test_lines(cell):
            assert line not in lab_sources[grade_id(cell)], f"hidden test leaked into the lab: {line}"


@pytest.mark.parametrize("lab", LABS)
def test_solution_runs_end_to_end_outside_the_repository(tmp_path, lab):
    """The full notebook (demos at full size) runs from a copy of the lab folder outside the repository,
    and with its outputs it stays small enough to save, submit and grade (animations are bounded)."""
    from nbclient import NotebookClient

    from grading.kernel_client import PromptKernelManager

    folder = tmp_path / lab
    shutil.copytree(ROOT / "solutions" / lab, folder)
    notebook = read(folder / f"{lab}.ipynb")
    start = time.perf_counter()
    # PromptKernelManager: stock nbclient sometimes waits out the whole 600 s after an ipywidgets cell (nbclient#312)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", kernel_manager_class=PromptKernelManager,
                            resources={"metadata": {"path": str(folder)}})
    old = dict(os.environ)
    os.environ["PATH"] = ENV["PATH"]
    os.environ.pop("NBGRADER_EXECUTION", None)
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    TIMINGS[f"{lab}: solution notebook end to end"] = time.perf_counter() - start
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    size = len(nbformat.writes(notebook).encode())
    assert size < MAX_EXECUTED_NOTEBOOK_BYTES, f"{lab} with its outputs is {size / 1e6:.1f} MB; keep figures and animations smaller"


def test_yours_or_course_falls_back_only_on_an_unfinished_exercise(capsys):
    from shared.checks import yours_or_course

    def unfinished(x):
        raise NotImplementedError("replace this line with your code")

    def buggy(x):
        raise ValueError("a bug of the student's")

    def course(x):
        return x + 1

    assert yours_or_course(unfinished, course, 98, 0) is course
    assert yours_or_course(unfinished, course, 98, 0) is course
    assert capsys.readouterr().out.count("Exercise 98 (unfinished)") == 1  # named once
    assert yours_or_course(course, None, 99, 0) is course
    with pytest.raises(ValueError, match="a bug"):
        yours_or_course(buggy, course, 99, 0)


# Every lab's demos fall back on the course's functions (shared.checks.yours_or_course) while an exercise is
# unfinished. Lab 2's stand-in for its training loop lives in tools.train, so no demo cell prints the answer.
DEMOS_SURVIVE_UNFINISHED = LABS


@pytest.mark.slow
@pytest.mark.parametrize("lab", DEMOS_SURVIVE_UNFINISHED)
def test_demos_survive_unfinished_exercises(tmp_path, lab):
    """A student who runs the whole released lab with no exercise done sees errors only in the exercises and their checks:
    a demo that needs an unfinished exercise says which one and draws with the course's version instead."""
    from nbclient import NotebookClient

    from grading.kernel_client import PromptKernelManager

    folder = tmp_path / lab
    shutil.copytree(ROOT / "labs" / lab, folder)
    notebook = read(folder / f"{lab}.ipynb")
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", allow_errors=True, kernel_manager_class=PromptKernelManager,
                            resources={"metadata": {"path": str(folder)}})
    old = dict(os.environ)
    os.environ.update(PATH=ENV["PATH"], NBGRADER_EXECUTION="autograde")  # the demos' small sizes: this test reads errors, not pictures
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    is_exercise = lambda cell: any(cell.metadata.get("nbgrader", {}).get(key) for key in ("grade", "solution"))
    crashed = [f"cell {i} ({grade_id(cell) or 'demo'}): {output.ename}: {output.evalue}"
               for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and not is_exercise(cell)
               for output in cell.outputs if output.output_type == "error"]
    assert not crashed, "cells other than the checks crashed on an unfinished lab:\n" + "\n".join(crashed)
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs)
    assert "is not finished: the demos use the course's version meanwhile" in printed, "no demo said which exercise to finish"
    checks = [cell for cell in notebook.cells if cell.metadata.get("nbgrader", {}).get("grade")]
    assert all(any(o.output_type == "error" for o in cell.outputs) for cell in checks), "every check fails on an unfinished lab"


# The course's own functions that answer an exercise (or most of one): a setup cell that imported
# them would hand the answer out; the checks import them where they compare against them.
ANSWERING_FUNCTIONS = {
    "03_context": {"context_vector"},
    "05_guidance": {"log_prob_gradient", "ClassifierGuidance", "ClassifierFreeGuidance"},
    "06_distillation": {"ddim_x0_target", "run_teacher"},
    "07_flow_matching": {"straightness", "EulerSampler", "HeunSampler"},
}


@pytest.mark.parametrize("lab", LABS)
def test_no_setup_cell_imports_an_answer(lab):
    import ast

    setup = next(cell for cell in read(ROOT / "labs" / lab / f"{lab}.ipynb").cells if grade_id(cell) == "setup")
    imported = {alias.asname or alias.name for node in ast.walk(ast.parse(setup.source))
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    assert not imported & ANSWERING_FUNCTIONS.get(lab, set()), f"{lab}'s setup imports {imported & ANSWERING_FUNCTIONS[lab]}"
    assert "*" not in imported


@pytest.mark.parametrize("lab", LABS)
def test_solution_gets_full_marks(course, lab):
    result = grades(course, lab, "solution")
    assert result["max_score"] > 0
    failed = {name: cell for name, cell in result["cells"].items() if cell[0] != cell[1]}
    assert not failed, f"reference answers lost points: {failed}"
    assert result["score"] == result["max_score"] and not result["needs_manual_grade"]


@pytest.mark.parametrize("lab", LABS)
def test_untouched_lab_gets_zero_on_every_graded_cell(course, lab):
    result = grades(course, lab, "untouched")
    assert result["cells"] and all(score == 0 for score, _, _ in result["cells"].values()), result["cells"]
    assert not result["needs_manual_grade"]


@pytest.mark.parametrize("lab", LABS)
def test_infinite_loop_is_cut_off_and_graded(course, lab):
    result = grades(course, lab, "infinite-loop")
    notebook = autograded(course, lab, "infinite-loop")
    timeouts = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.get("ename") == "CellTimeoutError"]
    assert timeouts, "the looping cell should have been interrupted"
    assert 0 < result["score"] < result["max_score"]


@pytest.mark.parametrize("lab", LABS)
def test_raising_answer_is_graded(course, lab):
    result = grades(course, lab, "raises")
    first_test = grade_id(graded_cells(read(ROOT / "solutions" / lab / f"{lab}.ipynb"))[0])
    assert result["cells"][first_test][0] == 0
    assert 0 < result["score"] < result["max_score"]


@pytest.mark.parametrize("lab", LABS)
def test_deleted_test_cell_is_restored(course, lab):
    first_test = grade_id(graded_cells(read(ROOT / "solutions" / lab / f"{lab}.ipynb"))[0])
    notebook = autograded(course, lab, "deleted-test")
    assert first_test in [grade_id(c) for c in notebook.cells], "the deleted test cell should be back"
    result = grades(course, lab, "deleted-test")
    assert result["cells"][first_test][0] == 0 and result["score"] == 0


@pytest.mark.parametrize("lab", LABS)
def test_edited_test_cells_are_overwritten(course, lab):
    result = grades(course, lab, "edited-test")
    assert result["score"] == 0, "edited tests must be replaced by the originals before grading"
    notebook = autograded(course, lab, "edited-test")
    assert all("all tests pass" not in c.source for c in graded_cells(notebook))


def test_collected_submissions_and_grades_csv(course):
    """zip_collect put every submission in place, and the exported CSV has a score for each."""
    import csv

    for lab in LABS:
        for student in STUDENTS:
            assert (course / "submitted" / student / lab / f"{lab}.ipynb").exists()
    rows = list(csv.DictReader((course / "grades.csv").open()))
    scores = {(row["assignment"], row["student_id"]): float(row["raw_score"]) for row in rows}
    for lab in LABS:
        assert scores[(lab, "solution")] == grades(course, lab, "solution")["max_score"]
        assert scores[(lab, "untouched")] == 0


@pytest.mark.parametrize("lab", LABS)
def test_feedback_shows_scores_and_no_hidden_test(course, lab):
    """`make feedback`: a page per submission with its scores, and not a line of the hidden tests,
    which nbgrader's own feedback would show (tests/test_feedback.py covers failing hidden tests)."""
    hidden = [line for cell in graded_cells(read(ROOT / "solutions" / lab / f"{lab}.ipynb")) for line in hidden_test_lines(cell)]
    assert hidden
    released = "\n".join(cell.source for cell in read(ROOT / "labs" / lab / f"{lab}.ipynb").cells)
    for student in STUDENTS:
        page = (course / "feedback" / student / lab / f"{lab}.html").read_text()
        text = html.unescape(re.sub(r"<[^>]+>", "", page))
        submitted = "\n".join(cell.source for cell in read(course / "submitted" / student / lab / f"{lab}.ipynb").cells)
        # a hidden line may also stand in a visible cell, or in the student's own answer
        leaked = [line for line in hidden if line in text and line not in submitted and line not in released]
        assert not leaked, f"the feedback for {student} shows hidden tests of {lab}: {leaked[:3]}"
        result = grades(course, lab, student)
        assert f"{lab} (Score: {round(result['score'], 2)} / {round(result['max_score'], 2)})" in text
        index = page.split('<div id="toc">')[1].split("</div>")[0]  # names each exercise, not "Test cell"
        assert "Test cell" not in index and len(re.findall(r"(?:Exercise \d+|Question) ·", index)) == len(graded_cells(read(ROOT / "labs" / lab / f"{lab}.ipynb")))
        assert "cdnjs" not in page and "<math" in page  # math drawn when the page is made, nothing fetched
