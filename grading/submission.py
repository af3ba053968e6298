"""Grades one (lab, student) in a process of its own: `nbgrader autograde LAB --student S --force`, guarded.

    python -m grading.submission --root COURSE --lab 01_sampling --student alice [--unsandboxed]

Started by the coordinator's Dask task with a pipe on stdin: when that pipe closes (the worker
was killed), this process kills itself and its process group at once, and bubblewrap's
--die-with-parent takes the kernel with it, so no grading is left running unattended and
no late write reaches the gradebook. The gradebook URL comes from GRADING_DB_URL (see
nbgrader_config.py), never from the command line, where `ps` would show its password. The
last line printed is the result, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

# jsonschema, which nbformat imports, builds rfc3987-syntax's grammar when it is installed (about
# 1.4 s, for IRI formats that no notebook schema uses): one grading process per submission would
# pay it every time. Without it, jsonschema simply has no IRI format checker.
sys.modules.setdefault("rfc3987_syntax", None)

from traitlets.config import Config  # noqa: E402

from grading.zygote import SOCKET_VARIABLE  # noqa: E402

RESULT_PREFIX = "GRADING-RESULT "


def autograde_config(*, root: Path, sandboxed: bool, workdir: Path, memory_limit: int) -> Config:
    """nbgrader's autograde pipeline with GuardedExecute (and its sandboxed kernel) and FlagForReview."""
    config = Config()
    config.Autograde.autograde_preprocessors = [
        "grading.executor.GuardedExecute",
        "nbgrader.preprocessors.IgnorePattern",
        "nbconvert.preprocessors.ClearMetadataPreprocessor",
        "nbgrader.preprocessors.LimitOutput",
        "nbgrader.preprocessors.SaveAutoGrades",
        "grading.executor.FlagForReview",
        "nbgrader.preprocessors.AssignLatePenalties",
        "nbgrader.preprocessors.CheckCellMetadata",
    ]
    config.GuardedExecute.course_root = str(root)
    # The kernel's work is done once the last cell has run: stop it at once rather than ask it to shut
    # down and wait (about 1 s a submission, much of it the kernel's own teardown, on a busy core).
    config.GuardedExecute.shutdown_kernel = "immediate"
    config.GuardedExecute.kernel_manager_class = (
        "grading.sandbox.SandboxedKernelManager" if sandboxed else "grading.kernel_client.PromptKernelManager")
    if sandboxed:
        config.SandboxedKernelManager.workdir = str(workdir)
        config.SandboxedKernelManager.memory_limit = memory_limit
        config.SandboxedKernelManager.font_cache_dir = str(root / ".grading" / "matplotlib")
        # Set by the warm grading process (grading/warm.py) when its zygote runs: kernels start past their imports.
        config.SandboxedKernelManager.zygote_socket = os.environ.get(SOCKET_VARIABLE, "")
    return config


def die_with_coordinator() -> None:
    """Kills this process group when stdin closes: the Dask task that started us is gone."""

    def watch() -> None:
        sys.stdin.buffer.read()
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="grading-watchdog").start()


def gradebook_result(db_url: str, lab: str, student: str) -> dict:
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gradebook:
        submission = gradebook.find_submission(lab, student)
        return {"score": submission.score, "max_score": submission.max_score,
                "needs_manual_grade": submission.needs_manual_grade}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--lab", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--unsandboxed", action="store_true")
    parser.add_argument("--memory-limit", type=int, default=4 * 2**30)
    parser.add_argument("--watch-stdin", action="store_true", help="die when stdin closes (used by the coordinator)")
    args = parser.parse_args(argv)
    if args.watch_stdin:
        die_with_coordinator()

    from jupyter_core.application import NoStart
    from nbgrader.apps.nbgraderapp import NbGraderApp

    from grading.executor import REPORTS

    root = args.root.resolve()
    workdir = root / ".grading" / "work" / args.lab / args.student
    started = time.perf_counter()
    app = NbGraderApp(config=autograde_config(root=root, sandboxed=not args.unsandboxed, workdir=workdir, memory_limit=args.memory_limit))
    status, error = "graded", ""
    try:
        app.initialize(["autograde", args.lab, "--student", args.student, "--force",
                        f"--CourseDirectory.root={root}", "--log-level=ERROR"])
        app.start()
    except NoStart:  # how jupyter_core says that the subcommand ran
        pass
    except SystemExit as exit:
        if exit.code not in (0, None):
            status, error = "failed", f"nbgrader autograde exited with {exit.code}"
    except Exception as exception:  # reported to the coordinator, which retries once and tells the instructor
        status, error = "failed", f"{type(exception).__name__}: {exception}"
    result = {"lab": args.lab, "student": args.student, "status": status, "error": error,
              "seconds": round(time.perf_counter() - started, 2), "review": [], "notes": []}
    for report in REPORTS.values():
        result["review"] += report["review"]
        result["notes"] += report["notes"]
    if status == "graded":
        try:
            result.update(gradebook_result(app.subapp.coursedir.db_url, args.lab, args.student))
        except Exception as exception:
            result.update(status="failed", error=f"no grade in the gradebook: {type(exception).__name__}: {exception}")
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0 if status == "graded" else 1


if __name__ == "__main__":
    sys.exit(main())
