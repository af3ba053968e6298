"""nbgrader configuration: solutions/ is the source, labs/ the release.

    nbgrader generate_assignment 01_sampling --force     # solutions/01_sampling -> labs/01_sampling
    nbgrader autograde 01_sampling                       # submitted/<student>/01_sampling -> autograded/...
    nbgrader generate_feedback 01_sampling --force       # autograded/... -> feedback/<student>/01_sampling/*.html
"""

import os
import re
from pathlib import Path

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor, Preprocessor
from nbgrader.preprocessors import GetGrades
from traitlets import Bool

c = get_config()  # noqa: F821 (provided by nbgrader)



c.CourseDirectory.root = str(Path(__file__).resolve().parent)
c.CourseDirectory.course_id = "diffusion-by-doing"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"

# The gradebook: SQLite in the course folder unless GRADING_DB_URL names another, such as
# postgresql+psycopg://USER:PASSWORD@HOST/DB for grading on several machines (`make autograde DB=...`).
# An environment variable, not a command-line option, so that `ps` never shows the password.
if os.environ.get("GRADING_DB_URL"):
    c.CourseDirectory.db_url = os.environ["GRADING_DB_URL"]

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError(\"replace this line with your code\")"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# An ordinary cell gets ORDINARY_CELL_SECONDS; a read-only cell whose source contains
# LONG_CELL_MARKER gets LONG_CELL_SECONDS. Only locked cells count, and the autograder
# restores locked cells from the source, so a student cannot grant themselves more time.
# A student's infinite loop is interrupted at the limit and grading goes on.
ORDINARY_CELL_SECONDS = 30
LONG_CELL_SECONDS = 300
LONG_CELL_MARKER = "# long-running cell"


def cell_timeout(cell):
    locked = cell.get("metadata", {}).get("nbgrader", {}).get("locked", False)
    return LONG_CELL_SECONDS if locked and LONG_CELL_MARKER in cell.get("source", "") else ORDINARY_CELL_SECONDS


c.Execute.timeout = ORDINARY_CELL_SECONDS
c.Execute.timeout_func = cell_timeout
c.Execute.interrupt_on_timeout = True

# While grading, warnings go to stdout and without the source line they would quote.
# nbgrader scores a test cell 0 if it wrote anything to stderr, so a correct answer that
# triggers a harmless warning (torch.tensor of a tensor, say) would lose its points; and the
# quoted line could be one of the hidden checks, which feedback must not show (see below).
WARNINGS_TO_STDOUT = (
    "import sys, warnings; "
    "warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: "
    "sys.stdout.write(warnings.formatwarning(message, category, filename, lineno, line=''))"
)
c.Execute.extra_arguments = [f"--IPKernelApp.exec_lines={WARNINGS_TO_STDOUT}"]

# A test cell that a student deleted comes back at grading time (edited ones are
# overwritten from the source anyway, since test cells are locked).
c.OverwriteCells.add_missing_cells = True

# `nbgrader zip_collect LAB` (or `make collect`) takes the notebooks under
# downloaded/LAB/archive/, zipped or not, named `<student>_<lab>.ipynb` or
# `<student>/<lab>.ipynb`; student ids are letters, digits, '.' and '-'.
c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[A-Za-z0-9.-]+)[/_](?P<file_id>\d\d_[a-z_]+\.ipynb)$"


# Feedback: what a student gets back. nbgrader's feedback is the autograded notebook as HTML,
# and that notebook holds the hidden checks again, code and tracebacks included
# (jupyter/nbgrader#917). They contain the reference formulas, so feedback that shows them
# hands the answers to every later class. Here a student sees each cell's score, the visible
# checks, their own code and every error message, but not a line of the hidden checks.
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
HIDDEN_NOTE = "# hidden checks ran here: they compare your answer with the reference on other inputs"
ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")


def quotes_cell(traceback_entry: str, execution_count: int | None) -> bool:
    """Whether a traceback entry is a frame of the cell run as In[execution_count] (of any cell if unknown)."""
    frame = re.match(r"\s*Cell In\[(\d+)\]", ANSI_CODE.sub("", traceback_entry))
    return frame is not None and (execution_count is None or int(frame.group(1)) == execution_count)


class HideHiddenTests(Preprocessor):
    """Removes the hidden checks' code from each cell, and the frames of that cell from its tracebacks."""

    enabled = Bool(True)  # nbconvert's preprocessors are off unless enabled

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or HIDDEN_BEGIN not in cell.source:
            return cell, resources
        kept, hiding = [], False
        for line in cell.source.splitlines():
            if HIDDEN_BEGIN in line:
                hiding = True
                kept.append(line[: line.index(HIDDEN_BEGIN)] + HIDDEN_NOTE)
            elif HIDDEN_END in line:
                hiding = False
            elif not hiding:
                kept.append(line)
        cell.source = "\n".join(kept)
        # Whatever the hidden checks' libraries logged to stderr is theirs, not the student's.
        cell.outputs = [output for output in cell.outputs if output.get("name") != "stderr"]
        for output in cell.outputs:
            if output.output_type == "error":
                # A frame of this cell quotes the lines around the failing one. Frames of the
                # student's own cells and of the shared module stay: they point at the mistake.
                output.traceback = [entry for entry in output.traceback if not quotes_cell(entry, cell.execution_count)]
        return cell, resources


# The page names each exercise in its index and shows its math without a network (grading/feedback.py).
import nbgrader as _nbgrader  # noqa: E402
from grading.feedback import TEMPLATE_FILE, TEMPLATE_NAME, TEMPLATES, NameExercises, RenderMathOffline  # noqa: E402

c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, NameExercises, RenderMathOffline, CSSHTMLHeaderPreprocessor]
c.HTMLExporter.template_name = TEMPLATE_NAME
c.HTMLExporter.template_file = TEMPLATE_FILE
c.HTMLExporter.extra_template_basedirs = [
    str(TEMPLATES), str(Path(_nbgrader.__file__).parent / "server_extensions" / "formgrader" / "templates")]
