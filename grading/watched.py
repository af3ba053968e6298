"""What the hidden checks rely on: the one list to update when the course's modules move.

Student code runs in the same Python process as the hidden checks, so it can replace what
they call. Before any student cell runs, the grader fingerprints everything named here; a
fingerprint that has changed when a check is about to run marks the submission for review.
"""

import re
import tomllib
from pathlib import Path

COURSE_ROOT = Path(__file__).resolve().parent.parent

# Modules whose public functions (and submodules) the checks call. Watched attribute by
# attribute: a student who rebinds `torch.allclose` or `np.testing.assert_allclose` is caught.
WATCHED_MODULES = (
    "builtins",
    "math",
    "operator",
    "torch",
    "torch.testing",
    "torch.nn.functional",
    "numpy",
    "numpy.testing",
)

# Modules imported before the baseline fingerprint, as the labs' setup cells import them: importing
# pyplot in a kernel registers IPython's inline-figure hook (post_execute) and reads, or builds,
# matplotlib's font cache (a file outside the kernel's folder, and fc-list in a subprocess). Done by
# a trusted setup cell after the baseline, each of these looked like a student's tampering.
PRELOADED_MODULES = ("matplotlib.pyplot", "matplotlib_inline.backend_inline")

# Modules preloaded only for a notebook whose code matches the pattern: torch._dynamo, which an
# optimizer's first step imports and which wraps torch.manual_seed, takes about a second to import,
# and most labs never train. A notebook that reaches it without a match is flagged for review.
PRELOADED_WHEN_USED = {"torch._dynamo": r"\boptim\b|\bcompile\b|dynamo"}


def modules_to_preload(sources: list[str]) -> list[str]:
    """PRELOADED_MODULES, and those of PRELOADED_WHEN_USED that the code in `sources` may import."""
    text = "\n".join(sources)
    return list(PRELOADED_MODULES) + [module for module, words in PRELOADED_WHEN_USED.items() if re.search(words, text)]


# Classes whose methods the checks call on the student's results (`x == y`, `x.allclose(y)`).
WATCHED_CLASSES = ("torch.Tensor", "torch.nn.Module", "numpy.ndarray")

# Builtins that start with an underscore but matter all the same.
WATCHED_PRIVATE_BUILTINS = ("__import__", "__build_class__")

# Builtins that ipykernel itself replaces for every request it runs (to route stdin).
PER_REQUEST_BUILTINS = ("input", "raw_input", "getpass")

# The IPython machinery that runs a cell and reports its error: replacing it can turn a
# failing check into a silent one.
WATCHED_SHELL_METHODS = (
    "run_cell", "run_cell_async", "run_ast_nodes", "run_code", "transform_cell",
    "showtraceback", "_showtraceback", "showsyntaxerror", "should_run_async",
)
WATCHED_KERNEL_METHODS = ("do_execute", "execute_request")

# Threads that libraries start by themselves (tqdm's monitor); any other new thread is
# student code that could patch and restore while a check runs.
LIBRARY_THREADS = ("TMonitor", "tqdm_monitor")

# The packages this repository installs (pyproject.toml) hold the course's reference
# functions: every module in them, and every class they define, is watched whole. Read
# from pyproject so that a package added or renamed there is watched without an edit here.
GRADER_PACKAGES = ("grading",)


def course_packages(root: Path = COURSE_ROOT) -> tuple[str, ...]:
    """The course's own packages, from pyproject.toml, without the grader."""
    settings = tomllib.loads((root / "pyproject.toml").read_text())
    packages = settings.get("tool", {}).get("setuptools", {}).get("packages", [])
    return tuple(name for name in packages if name.split(".")[0] not in GRADER_PACKAGES)


# Folders of the course that a grading kernel may read, beside the course's packages.
COURSE_DATA_FOLDERS = ("weights", "data")
