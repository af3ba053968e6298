"""Submissions in: a zip or folder of notebooks, each checked before it reaches nbgrader.

Accepted names: `<student>_<lab>.ipynb` or `<student>/<lab>.ipynb` (the same as `make collect`).
A file that is not a notebook, an empty one, a notebook of another lab, a student id that
appears twice or a file over the size limit is refused with one line saying why; the rest of
the class goes on. Refused files are left where they were: nothing is deleted.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

STUDENT_ID = re.compile(r"^[A-Za-z0-9.-]+$")
MAX_NOTEBOOK_BYTES = 20_000_000  # the labs with every output are under 1 MB (tests/test_labs.py keeps them under 2)


@dataclass
class Submission:
    student: str
    lab: str
    origin: str  # where it came from, for messages
    content: bytes


def grade_ids(notebook: dict) -> set[str]:
    return {cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") for cell in notebook.get("cells", [])} - {None}


def check(submission: Submission, lab_grade_ids: set[str], other_labs: dict[str, set[str]], max_bytes: int) -> str:
    """Why this submission cannot be graded, or ''."""
    size = len(submission.content)
    if size == 0:
        return "the file is empty"
    if size > max_bytes:
        return f"the file is {size / 1e6:.0f} MB, over the {max_bytes / 1e6:.0f} MB limit (MAX_NOTEBOOK_MB)"
    try:
        notebook = json.loads(submission.content)
        nbformat.validate(nbformat.reads(submission.content.decode(), as_version=4))
    except (ValueError, UnicodeDecodeError) as error:
        return f"not a notebook ({str(error).splitlines()[0][:120]})"
    except nbformat.ValidationError as error:
        return f"not a valid notebook ({str(error).splitlines()[0][:120]})"
    found = grade_ids(notebook)
    if lab_grade_ids and not found & lab_grade_ids:
        likely = [lab for lab, ids in other_labs.items() if found & ids]
        return f"not a notebook of {submission.lab}" + (f" (it looks like {likely[0]})" if likely else " (none of its cells are there)")
    return ""


def read_submissions(source: Path, lab: str) -> tuple[list[Submission], list[str]]:
    """The notebooks for `lab` in a zip or a folder, and one line for each file refused on its name."""
    entries: list[tuple[str, bytes]] = []
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            entries = [(info.filename, archive.read(info)) for info in archive.infolist() if not info.is_dir()]
    elif source.is_dir():
        entries = [(str(path.relative_to(source)), path.read_bytes()) for path in sorted(source.rglob("*")) if path.is_file()]
    else:
        raise ValueError(f"{source} is neither a zip file nor a folder")
    name = re.compile(rf"(?:^|/)(?P<student>[^/]+)[/_]{re.escape(lab)}\.ipynb$")
    submissions, problems = [], []
    for path, content in entries:
        if "__MACOSX" in path or "/." in f"/{path}":
            continue  # archive clutter
        match = name.search(path)
        if not match:
            if path.endswith(".ipynb"):
                problems.append(f"{path}: not named <student>_{lab}.ipynb or <student>/{lab}.ipynb; skipped")
            continue
        student = match["student"]
        if not STUDENT_ID.match(student):
            problems.append(f"{path}: student id {student!r} may hold only letters, digits, '.' and '-'; skipped")
            continue
        submissions.append(Submission(student, lab, path, content))
    return submissions, problems


def refuse_duplicates(submissions: list[Submission]) -> tuple[list[Submission], list[str]]:
    """A student id that appears twice is graded for neither file: which one counts is the instructor's call."""
    by_student: dict[str, list[Submission]] = {}
    for submission in submissions:
        by_student.setdefault(submission.student, []).append(submission)
    kept, problems = [], []
    for student, group in by_student.items():
        if len(group) == 1:
            kept.append(group[0])
        else:
            problems.append(f"{student}: {len(group)} submissions ({', '.join(s.origin for s in group)}); "
                            "graded none of them: keep one and run again")
    return kept, problems
