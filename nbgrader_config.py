"""nbgrader configuration: solutions/ is the source, labs/ the release.

    nbgrader generate_assignment 01_sampling --force     # solutions/01_sampling -> labs/01_sampling
    nbgrader autograde 01_sampling                       # submitted/<student>/01_sampling -> autograded/...
"""

from pathlib import Path

c = get_config()  # noqa: F821 (provided by nbgrader)



c.CourseDirectory.root = str(Path(__file__).resolve().parent)
c.CourseDirectory.course_id = "diffusion-by-doing"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"

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

# A test cell that a student deleted comes back at grading time (edited ones are
# overwritten from the source anyway, since test cells are locked).
c.OverwriteCells.add_missing_cells = True

# `nbgrader zip_collect LAB` (or `make collect`) takes the notebooks under
# downloaded/LAB/archive/, zipped or not, named `<student>_<lab>.ipynb` or
# `<student>/<lab>.ipynb`; student ids are letters, digits, '.' and '-'.
c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[A-Za-z0-9.-]+)[/_](?P<file_id>\d\d_[a-z_]+\.ipynb)$"
