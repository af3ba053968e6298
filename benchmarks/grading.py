"""Grading a class: plain serial `nbgrader autograde` against the parallel, sandboxed grader, in one run.

    .venv/bin/python benchmarks/grading.py                      # 40 submissions of 01_sampling (the full benchmark)
    .venv/bin/python benchmarks/grading.py --students 5         # a quick check of the script itself

A synthetic class of one lab, in a temporary course: the submissions cycle through right (the
reference answers), partly right (the first answer left as the stub), wrong (every answer the
stub), and two hostile kinds: one patches torch.allclose, torch.equal and torch.isclose over
stub answers, one gives the right answers and then calls os._exit in its last answer. The same
class is graded in a symmetric order, so that a steady drift in this machine's speed cancels:
serial nbgrader (one process, as `make autograde` used to), `grading` on 2 workers, on 1 worker,
on 2 workers again, serial nbgrader again; each figure is the mean of its runs. A few honest
submissions, graded on one worker with warm kernels, sandboxed with kernels started afresh,
unsandboxed twice, then the other two again, give the sandbox's own cost per submission and what
warm kernels (grading/zygote.py) save. Prints throughput, the speed-up over serial, those two, a
projection for 300 students x 6 labs, and checks that every honest submission scores exactly what
serial nbgrader gave it. Run it with nothing else busy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from grading.class_grader import Settings, grade_class  # noqa: E402

KINDS = ("right", "partly", "wrong", "patcher", "exiter")
HONEST = ("right", "partly", "wrong")
STUB = 'raise NotImplementedError("replace this line with your code")'
PATCH = ("import torch\nfor _name in ('allclose', 'equal', 'isclose'):\n"
         "    setattr(torch, _name, lambda *args, **kwargs: True)\n")


def environment() -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("NBGRADER_EXECUTION", None)
    return env


def nbgrader(*args: str, root: Path) -> None:
    subprocess.run([str(BIN / "nbgrader"), *args, f"--CourseDirectory.root={root}", "--log-level=ERROR"],
                   cwd=ROOT, env=environment(), check=True, capture_output=True)


def answer_cells(notebook):
    return [cell for cell in notebook.cells if cell.get("metadata", {}).get("nbgrader", {}).get("solution")]


def without_markers(source: str) -> str:
    """The reference answer: the solution cell without its marker lines, which may be indented."""
    return "\n".join(line for line in source.splitlines() if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))


def make_class(lab: str, students: int, folder: Path) -> tuple[Path, dict[str, str]]:
    """A course holding `lab` and `students` submissions; returns it and each student's kind."""
    root = folder / "prepared"
    shutil.copytree(ROOT / "solutions" / lab, root / "solutions" / lab)
    nbgrader("generate_assignment", lab, "--force", root=root)
    solution = nbformat.read(root / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    reference = {cell.metadata.nbgrader.grade_id: without_markers(cell.source) for cell in answer_cells(solution)}
    kinds = {}
    for number in range(students):
        kind = KINDS[number % len(KINDS)]
        student = f"{kind}-{number:03d}"
        kinds[student] = kind
        notebook = nbformat.read(root / "labs" / lab / f"{lab}.ipynb", as_version=4)
        answers = answer_cells(notebook)
        for position, cell in enumerate(answers):
            right = reference[cell.metadata.nbgrader.grade_id]
            if kind == "right" or (kind == "partly" and position > 0) or kind == "exiter":
                cell.source = right
            if kind == "patcher" and position == 0:
                cell.source = PATCH + cell.source
            if kind == "exiter" and position == len(answers) - 1:
                cell.source = right + "\nimport os\nos._exit(0)"
        target = root / "submitted" / student / lab / f"{lab}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(notebook, target)
    (root / "students.csv").write_text("id\n" + "\n".join(kinds) + "\n")
    nbgrader("db", "student", "import", str(root / "students.csv"), root=root)
    return root, kinds


def scores(root: Path, lab: str) -> dict[str, tuple[float, bool]]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        return {s.student_id: (s.score, s.needs_manual_grade) for s in gradebook.find_assignment(lab).submissions}


def fresh_copy(prepared: Path, name: str) -> Path:
    """A copy of the prepared course, graded by no one yet."""
    copy = prepared.parent / f"{name}-{len(list(prepared.parent.iterdir()))}"
    shutil.copytree(prepared, copy)
    return copy


def grade_serially(prepared: Path, lab: str) -> tuple[float, dict]:
    root = fresh_copy(prepared, "serial")
    started = time.perf_counter()
    subprocess.run([str(BIN / "nbgrader"), "autograde", lab, "--force", f"--CourseDirectory.root={root}", "--log-level=ERROR"],
                   cwd=ROOT, env=environment(), capture_output=True)  # exits 1 when a notebook failed: the hostile ones do
    return time.perf_counter() - started, scores(root, lab)


def grade_in_parallel(prepared: Path, lab: str, workers: int, unsandboxed: bool = False, only: list[str] | None = None):
    root = fresh_copy(prepared, f"grading-{workers}{'-unsandboxed' if unsandboxed else ''}")
    if only is not None:
        for folder in (root / "submitted").iterdir():
            if folder.name not in only:
                shutil.rmtree(folder)
    settings = Settings(root=root, workers=workers, unsandboxed=unsandboxed, export=False, log=lambda line: None)
    started = time.perf_counter()
    results = grade_class(settings, [lab])
    seconds = time.perf_counter() - started
    failed = [result for result in results if result["status"] != "graded"]
    if failed:
        print(f"  {len(failed)} failed on {workers} worker(s): {failed[0]['error']}")
    flagged = [result for result in results if result.get("review") and result["student"].split("-")[0] in HONEST]
    for result in flagged:  # an honest submission flagged for review is a false alarm of the tamper checks
        print(f"  FALSE ALARM {result['student']}: {'; '.join(result['review'][:3])}")
    return seconds, scores(root, lab)


@contextlib.contextmanager
def warm_kernels_off():
    """Every kernel started afresh (grading/warm.py reads GRADING_WARM_KERNELS when a worker starts)."""
    os.environ["GRADING_WARM_KERNELS"] = "0"
    try:
        yield
    finally:
        os.environ.pop("GRADING_WARM_KERNELS")


def per_minute(count: int, seconds: float) -> float:
    return 60 * count / seconds


def report(label: str, seconds: float, count: int, note: str) -> None:
    print(f"{label:29s}: {seconds:7.1f} s  {per_minute(count, seconds):6.2f} submissions/min  {note}".rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="01_sampling")
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--overhead-sample", type=int, default=4, help="honest submissions graded with and without the sandbox")
    args = parser.parse_args()
    if args.students < 1:
        parser.error("--students must be at least 1")

    with tempfile.TemporaryDirectory(prefix="grading-benchmark-") as folder:
        prepared, kinds = make_class(args.lab, args.students, Path(folder))
        count = len(kinds)
        print(f"{args.lab}: {count} submissions ({', '.join(f'{sum(k == kind for k in kinds.values())} {kind}' for kind in KINDS)}), "
              f"{os.cpu_count()} cores")
        # Serial runs after ours once took 1.7 times as long as before them: Dask had set OMP_NUM_THREADS=1
        # in this process (grading.class_grader.start_client now undoes it). The symmetric order
        # (S 2 1 2 S) would show such a drift, and cancels a steady drift of the machine's speed.
        serial_before, serial = grade_serially(prepared, args.lab)
        report("serial nbgrader autograde", serial_before, count, "(first)")
        two_first, graded_two = grade_in_parallel(prepared, args.lab, 2)
        ratio_first = serial_before / two_first
        report("grading, 2 workers, sandboxed", two_first, count, f"({ratio_first:.2f}x the serial run before it)")
        one_seconds, graded_one = grade_in_parallel(prepared, args.lab, 1)
        report("grading, 1 worker, sandboxed", one_seconds, count, "")
        two_second, _ = grade_in_parallel(prepared, args.lab, 2)
        serial_after, _ = grade_serially(prepared, args.lab)
        ratio_second = serial_after / two_second
        report("grading, 2 workers, sandboxed", two_second, count, f"({ratio_second:.2f}x the serial run after it)")
        report("serial nbgrader autograde", serial_after, count, "(last)")
        serial_seconds, two_seconds = (serial_before + serial_after) / 2, (two_first + two_second) / 2
        runs = {1: (one_seconds, graded_one), 2: (two_seconds, graded_two)}
        print(f"means                        : serial {per_minute(count, serial_seconds):.2f}/min, "
              f"2 workers {per_minute(count, two_seconds):.2f}/min")

        # The jail's own cost with kernels started afresh, as unsandboxed kernels are, then what the warm
        # kernels (grading/zygote.py) save; in the order warm, fresh, unsandboxed x 2, fresh, warm.
        sample = [student for student, kind in kinds.items() if kind in HONEST][: args.overhead_sample]
        warm, fresh, unboxed = [grade_in_parallel(prepared, args.lab, 1, only=sample)[0]], [], []
        with warm_kernels_off():
            fresh.append(grade_in_parallel(prepared, args.lab, 1, only=sample)[0])
            unboxed += [grade_in_parallel(prepared, args.lab, 1, unsandboxed=True, only=sample)[0] for _ in range(2)]
            fresh.append(grade_in_parallel(prepared, args.lab, 1, only=sample)[0])
        warm.append(grade_in_parallel(prepared, args.lab, 1, only=sample)[0])
        warm_mean, fresh_mean, unboxed_mean = sum(warm) / 2, sum(fresh) / 2, sum(unboxed) / 2
        print(f"sandbox overhead             : {(fresh_mean - unboxed_mean) / len(sample):+7.2f} s per submission "
              f"({len(sample)} honest submissions, 1 worker, kernels started afresh: sandboxed {fresh[0]:.1f} and "
              f"{fresh[1]:.1f} s, unsandboxed {unboxed[0]:.1f} and {unboxed[1]:.1f} s)")
        print(f"warm kernels                 : {(warm_mean - fresh_mean) / len(sample):+7.2f} s per submission "
              f"(sandboxed, forked from the zygote {warm[0]:.1f} and {warm[1]:.1f} s, started afresh {fresh[0]:.1f} and {fresh[1]:.1f} s)")

        one, two = per_minute(count, runs[1][0]), per_minute(count, runs[2][0])
        efficiency = two / (2 * one)
        print(f"speed-up on 2 workers        : {runs[1][0] / runs[2][0]:.2f}x one worker, {serial_seconds / runs[2][0]:.2f}x serial "
              f"(target >= 1.8x serial; {min(ratio_first, ratio_second):.2f}x to {max(ratio_first, ratio_second):.2f}x run by run)")
        total = 300 * 6
        print(f"projection, 300 students x 6 labs ({total} submissions) at this lab's cost per submission,")
        print(f"  one worker's {one:.2f}/min and the {efficiency:.0%} per-worker efficiency measured on 2 workers:")
        print(f"  serial nbgrader: {total / per_minute(1, serial_seconds / count) / 60:6.1f} h")
        for workers in (1, 8, 64):
            rate = one * (workers if workers == 1 else workers * efficiency)
            print(f"  {workers:2d} worker(s)   : {total / rate / 60:6.1f} h")

        mismatched = []
        for workers, (_, graded) in runs.items():
            for student, kind in kinds.items():
                if kind in HONEST and graded.get(student, (None,))[0] != serial.get(student, (None,))[0]:
                    mismatched.append(f"{student} on {workers} worker(s): {graded.get(student)} vs serial {serial.get(student)}")
        print("honest scores equal serial nbgrader's: " + ("yes" if not mismatched else "NO\n  " + "\n  ".join(mismatched)))
        missing = (float("nan"), False)
        hostile = {student: (serial.get(student, missing), runs[2][1].get(student, missing))
                   for student, kind in kinds.items() if kind not in HONEST}
        for student, (theirs, ours) in sorted(hostile.items()):
            print(f"  {student:12s} serial: {theirs[0]:g}{' (manual)' if theirs[1] else ''}   "
                  f"ours: {ours[0]:g}{' (flagged for review)' if ours[1] else ''}")
        return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
