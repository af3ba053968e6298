"""What a student gets back: feedback pages that name each exercise and show their math offline.

nbgrader's feedback page lists every graded cell as "Test cell (Score: 0.0 / 2.0)", and
leaves the notebook's LaTeX to MathJax from a CDN, so a page opened offline (as a student
opens a file they were sent) shows raw `$\\sqrt{\\bar\\alpha_t}$`. Two preprocessors fix
that before nbconvert renders the page with `templates/feedback_offline`:

  NameExercises      gives each graded cell the title of the exercise it checks, taken from
                     the lab's own heading ("Exercise 2 · The predicted clean image");
  RenderMathOffline  turns every $...$ and $$...$$ of the markdown into MathML, which
                     browsers draw natively, so the page needs no script and no network.
"""

from __future__ import annotations

import re
from pathlib import Path

from latex2mathml.converter import convert
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE_NAME = "feedback_offline"
TEMPLATE_FILE = "feedback_offline.html.j2"

# A lab's exercise headings: "### Exercise 3 · The reverse step (3 points)", "### Question · What changed? (1 point)".
EXERCISE_HEADING = re.compile(r"^#{2,4}\s*((?:Exercise|Question)\b.*?)\s*(?:\(\d+(?:\.\d+)? points?\))?\s*$", re.M)
# Code spans first, so that a `$` inside backticks stays code; then display math, then inline math.
MATH_OR_CODE = re.compile(r"(`+)(?:.+?)\1|\$\$(.+?)\$\$|(?<![\\$])\$([^$\n]+?)\$", re.S)


def tex_as_mathml(markdown: str) -> str:
    """The markdown with each TeX span replaced by MathML; a span latex2mathml cannot read stays as it was."""

    def replace(match: re.Match) -> str:
        display, inline = match.group(2), match.group(3)
        if display is None and inline is None:
            return match.group(0)  # a code span
        try:
            return convert(display if display is not None else inline, display="block" if display is not None else "inline")
        except Exception:  # one odd formula must not cost the student the page
            return match.group(0)

    return MATH_OR_CODE.sub(replace, markdown)


class NameExercises(Preprocessor):
    """Stores in each graded cell's metadata (`exercise`) the title of the exercise above it."""

    enabled = Bool(True)

    def preprocess(self, nb, resources):
        title = None
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                headings = EXERCISE_HEADING.findall(cell.source)
                title = headings[-1] if headings else title
            grading = cell.metadata.get("nbgrader", {})
            if grading.get("grade"):
                cell.metadata["exercise"] = title or grading.get("grade_id", "graded cell")
        return nb, resources


class RenderMathOffline(Preprocessor):
    """Replaces the TeX in markdown cells with MathML (see the module's docstring)."""

    enabled = Bool(True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "markdown":
            cell.source = tex_as_mathml(cell.source)
        return cell, resources
