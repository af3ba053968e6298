"""`python -m grading autograde LAB|all [options]`: grade a class (see the README's instructor section)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from grading.class_grader import GradingRefused, Settings, grade_class, lab_grade_ids


def byte_size(text: str) -> int:
    """'4G', '512M' or a number of bytes."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    text = text.strip().upper().removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grading", description="Grade every submission of a lab in parallel, sandboxed.")
    commands = parser.add_subparsers(dest="command", required=True)
    autograde = commands.add_parser("autograde", help="grade submitted/<student>/LAB/ (or FROM), then export grades.csv")
    autograde.add_argument("lab", help="a lab such as 01_sampling, or 'all'")
    autograde.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="the course folder")
    autograde.add_argument("--from", dest="source", type=Path, help="a zip or folder of <student>_<lab>.ipynb files to collect first")
    autograde.add_argument("--scheduler", default=os.environ.get("SCHEDULER", ""), help="tcp://HOST:8786 of a Dask scheduler (default: a local cluster)")
    autograde.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS") or 0), help="local workers (default: one per core)")
    autograde.add_argument("--force", action="store_true", default=os.environ.get("FORCE") == "1", help="grade again what was graded")
    autograde.add_argument("--memory-limit", type=byte_size, default=byte_size(os.environ.get("MEMORY_LIMIT") or "4G"),
                           help="memory a kernel may allocate (default 4G)")
    autograde.add_argument("--max-notebook-mb", type=float, default=float(os.environ.get("MAX_NOTEBOOK_MB") or 20))
    autograde.add_argument("--no-export", action="store_true", help="leave grades.csv alone")
    args = parser.parse_args(argv)

    root = args.root.resolve()
    labs = sorted(lab_grade_ids(root)) if args.lab == "all" else [args.lab]
    settings = Settings(root=root, db_url=os.environ.get("GRADING_DB_URL", ""), scheduler=args.scheduler, workers=args.workers,
                        force=args.force, unsandboxed=os.environ.get("UNSANDBOXED") == "1", memory_limit=args.memory_limit,
                        max_notebook_bytes=int(args.max_notebook_mb * 1e6), export=not args.no_export)
    try:
        results = grade_class(settings, labs, source=args.source)
    except GradingRefused as refusal:
        print(f"grading refused: {refusal}", file=sys.stderr)
        return 2
    failed = [result for result in results if result["status"] != "graded"]
    review = [result for result in results if result.get("review")]
    print(f"{len(results) - len(failed)} graded, {len(failed)} failed, {len(review)} flagged for manual review")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
