import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
LABS = sorted(path.name for path in (ROOT / "solutions").iterdir() if (path / f"{path.name}.ipynb").exists())

# Tests share two cores with nothing else; more threads only fight each other.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def environment_kept_to_each_test():
    """Whatever a test leaves in os.environ (a Dask nanny writes OMP_NUM_THREADS=1 and a malloc setting there,
    even when the worker it restarts comes back later) must not reach the kernels of the tests after it."""
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)


@pytest.fixture(scope="session")
def train_sprites():
    from shared.data import load_sprites

    return load_sprites("train")


def grade_id(cell) -> str | None:
    """nbgrader's name for a notebook cell, or None for a cell it does not track."""
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


# Wall-clock figures the lab tests record (seconds); printed at the end of `make test`.
TIMINGS: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("lab timings (2 CPU threads per kernel)")
        for name, seconds in sorted(TIMINGS.items()):
            terminalreporter.write_line(f"{name:55s} {seconds:6.1f} s")
