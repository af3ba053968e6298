"""nbgrader's Execute step, guarded: a dead kernel keeps earlier points, tampering is caught and flagged.

`GuardedExecute` replaces nbgrader's `Execute` in the autograde pipeline (see
`submission.autograde_config`). It runs the cells one by one like nbgrader, and:

- before any student cell, runs a trusted probe (kernel_probe.py) that fingerprints what the
  hidden checks rely on; before every check it probes again and compares, here, outside the
  kernel. A check whose ground has moved is not run: it scores 0 with the reason as its error,
  and the submission is flagged for manual review;
- after every cell it collects what the kernel's audit hook recorded (files outside the
  folder, sockets, processes, signals) and flags the submission with it;
- when the kernel dies (`os._exit`, a crash), the cells before keep their outputs, and the
  cell that killed it and every later one fail with a message saying so.

`FlagForReview` runs after nbgrader's `SaveAutoGrades` and marks every grade of a flagged
notebook as needing a manual grade, so that the gradebook's total is never taken as final.
"""

from __future__ import annotations

import ast
import json
import secrets
import sys
from pathlib import Path

from IPython.core.inputtransformer2 import TransformerManager
from nbclient.exceptions import DeadKernelError
from nbclient.client import NotebookClient
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell
from nbgrader.api import Gradebook
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Unicode

from grading import watched

PROBE_SOURCE = (Path(__file__).with_name("kernel_probe.py")).read_text()
MOST_NAMES_IN_A_REASON = 6

# What each grading process reports back to its coordinator, by notebook name.
REPORTS: dict[str, dict] = {}


def is_check(cell) -> bool:
    """A test cell: graded, and not a student's answer."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


def is_trusted(cell) -> bool:
    """A cell restored from the source at grading time (locked), which students cannot change."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("locked")) and not meta.get("solution")


def failed_output(name: str, message: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=name, evalue=message, traceback=[f"{name}: {message}"])


FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def walk_outside_functions(node):
    """ast.walk, except the bodies of functions and lambdas, which run when called, not when defined."""
    if isinstance(node, FUNCTIONS):
        arguments = node.args
        for part in [*arguments.defaults, *arguments.kw_defaults, *getattr(node, "decorator_list", [])]:
            if part is not None:  # evaluated where the function is defined
                yield from walk_outside_functions(part)
        if not isinstance(node, ast.Lambda):
            yield ast.Name(node.name, ast.Store())
        return
    yield node
    for child in ast.iter_child_nodes(node):
        yield from walk_outside_functions(child)


def stored_and_loaded(node, walk=ast.walk) -> tuple[set[str], set[str]]:
    names = [n for n in walk(node) if isinstance(n, ast.Name)]
    return {n.id for n in names if not isinstance(n.ctx, ast.Load)}, {n.id for n in names if isinstance(n.ctx, ast.Load)}


def function_global_reads(tree: ast.AST) -> set[str]:
    """Names that the functions and lambdas in `tree` read from the notebook's globals."""
    reads = set()
    for node in ast.walk(tree):
        if isinstance(node, FUNCTIONS):
            arguments = node.args
            parameters = {a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs}
            parameters |= {a.arg for a in (arguments.vararg, arguments.kwarg) if a is not None}
            stored, loaded = stored_and_loaded(node)
            reads |= loaded - stored - parameters
    return reads


def parse_cell(source: str) -> ast.Module | None:
    """A cell's syntax tree, its IPython magics turned into Python first; None if it does not parse."""
    try:
        return ast.parse(TransformerManager().transform_cell(source))
    except SyntaxError:
        return None


def names_read(source: str) -> set[str] | None:
    """The notebook names a cell reads: those it loads before binding them itself, in the order the cell
    runs (`x = f(x)` reads x; a `try:` that sets g and then uses it does not), and its functions'
    globals. None if the cell does not parse (then every name counts)."""
    tree = parse_cell(source)
    if tree is None:
        return None
    bound, reads = set(), set()

    def visit(node) -> None:
        stored, loaded = stored_and_loaded(node, walk_outside_functions)
        # a comprehension's own variables live in it alone: `[f(i) for i in items]` reads items, not i
        own = {name for part in walk_outside_functions(node) if isinstance(part, ast.comprehension)
               for name in stored_and_loaded(part.target)[0]}
        reads.update(loaded - bound - own)
        bound.update(stored - own)

    def run(statements) -> None:
        for statement in statements:
            if isinstance(statement, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try)):
                for part in ast.iter_child_nodes(statement):  # the header: a test, an iterable, a context manager
                    if not isinstance(part, (ast.stmt, ast.excepthandler)):
                        visit(part)
                run(statement.body)
                for handler in getattr(statement, "handlers", []):
                    if handler.type is not None:
                        visit(handler.type)
                    if handler.name:
                        bound.add(handler.name)
                    run(handler.body)
                run(getattr(statement, "orelse", []))
                run(getattr(statement, "finalbody", []))
            else:
                visit(statement)

    run(tree.body)
    return reads | function_global_reads(tree)


def trusted_function_reads(notebook) -> set[str] | None:
    """What the functions of the locked cells read from the notebook's globals: a check may call them.
    None if a locked cell does not parse (then every name counts)."""
    reads = set()
    for cell in notebook.cells:
        if cell.cell_type == "code" and is_trusted(cell):
            tree = parse_cell(cell.source)
            if tree is None:
                return None
            reads |= function_global_reads(tree)
    return reads


def changed_names(before: dict, after: dict) -> list[str]:
    return [name for name, mark in before.items() if after.get(name) != mark]


def summarise(names: list[str]) -> str:
    shown = ", ".join(names[:MOST_NAMES_IN_A_REASON])
    return shown + (f" and {len(names) - MOST_NAMES_IN_A_REASON} more" if len(names) > MOST_NAMES_IN_A_REASON else "")


class GuardedExecute(Execute):
    """nbgrader's Execute, with tamper probes around the checks and recovery from a dead kernel."""

    course_root = Unicode("", help="The course being graded: reading in it outside the kernel's folder is reported").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        self.token = secrets.token_hex(8)
        self.baseline_watched, self.baseline_digest = {}, ""  # set by the baseline probe
        self.review: list[str] = []  # reasons to grade by hand
        self.notes: list[str] = []  # what the student should know, not a reason to review
        self.preload = watched.modules_to_preload([cell.source for cell in nb.cells if cell.cell_type == "code"])
        with self.setup_kernel():
            info = self.wait_for_reply(self.kc.kernel_info())
            self.nb.metadata["language_info"] = info["content"]["language_info"]
            self._run_cells(resources)
        self.set_widgets_metadata()
        self._report(resources)
        return self.nb, self.resources

    def _run_cells(self, resources) -> None:
        code_cells = [index for index, cell in enumerate(self.nb.cells) if cell.cell_type == "code"]
        try:
            baseline = self._probe("baseline", code_cells[0] if code_cells else 0)
        except DeadKernelError:
            baseline = None
        if baseline is None:  # the kernel never ran a line of ours: grade nothing rather than grade unguarded
            for index in code_cells:
                self.nb.cells[index].outputs = [failed_output("GradingError", "the grading kernel did not start")]
            self.review.append("the grading kernel did not start or did not answer the tamper probe")
            return
        self.baseline_watched, self.baseline_digest = baseline["watched"], baseline.get("digest", "")
        trusted_names = dict(baseline["namespace"])
        helper_reads = trusted_function_reads(self.nb)
        known_threads = set(baseline["threads"])
        latest = baseline
        died_in = None
        for position, index in enumerate(code_cells):
            cell = self.nb.cells[index]
            if died_in is not None:
                cell.outputs = [failed_output("DeadKernelError", f"not run: the kernel died or broke in cell {died_in}")]
                continue
            if is_check(cell):
                # what the check depends on among the notebook's names: those it or a locked cell's functions read;
                # a name no check reads, such as a check's own scratch `g`, may be rebound by a later demo cell
                read = names_read(cell.source)
                names_checked = None if read is None or helper_reads is None else read | helper_reads
                reason = self._tampering(baseline, trusted_names, latest, names_checked)
                if reason:
                    cell.outputs = [failed_output("TamperingDetected", f"{reason}; this check was not run and is left for manual review")]
                    cell.execution_count = None
                    self.review.append(f"cell {index} ({cell.metadata.nbgrader.get('grade_id')}): {reason}")
                    continue
            next_is_check = position + 1 < len(code_cells) and is_check(self.nb.cells[code_cells[position + 1]])
            before = latest["namespace"]
            try:
                self.preprocess_cell(cell, resources, index)
                latest = self._probe("full" if next_is_check else "light", index)
            except DeadKernelError:
                died_in = index
                cell.outputs.append(failed_output(
                    "DeadKernelError", "the kernel died while running this cell (os._exit, a crash or the memory cap); "
                    "this cell and every later one count as failed, the earlier ones keep their points"))
                self.notes.append(f"the kernel died in cell {index}: later cells were not run")
                continue
            except Exception as error:  # e.g. no IOPub output: the cell broke the kernel's own messaging (builtins patched)
                died_in = index
                message = str(error).splitlines()[0] if str(error) else type(error).__name__
                cell.outputs.append(failed_output(
                    "KernelBroken", f"the kernel stopped answering after this cell ({message}); later cells count as failed"))
                self.review.append(f"cell {index}: the kernel stopped answering after it ({message})")
                continue
            started = set(latest["threads"]) - known_threads
            known_threads |= started
            if started and not is_trusted(cell):
                # a thread of the student's own can patch what a check uses while it runs, and restore it after
                self.review.append(f"cell {index}: started a thread ({', '.join(sorted(started))})")
            if is_trusted(cell):
                # what this trusted cell bound itself; a name it left alone keeps whatever status it had
                for name, mark in latest["namespace"].items():
                    if before.get(name) != mark:
                        trusted_names[name] = mark
                for name in [name for name in trusted_names if name not in latest["namespace"]]:
                    del trusted_names[name]  # a trusted cell deleted it itself
            for event in latest["events"]:
                self.review.append(f"cell {index}: {event}")

    def _tampering(self, baseline: dict, trusted_names: dict, latest: dict, names_checked: set[str] | None = None) -> str:
        """Why the check about to run cannot be trusted, or ''."""
        replaced = changed_names(baseline["watched"], latest["watched"])
        rebound = [name for name in changed_names(trusted_names, latest["namespace"]) if names_checked is None or name in names_checked]
        reasons = []
        if replaced:
            reasons.append(f"student code replaced what the checks rely on: {summarise(replaced)}")
        if rebound:
            reasons.append(f"student code rebound names the notebook set: {summarise(rebound)}")
        return "; ".join(reasons)

    def _probe(self, mode: str, index: int) -> dict:
        """Runs the probe in the kernel and returns what it printed; raises DeadKernelError if the kernel is gone."""
        nonce = secrets.token_hex(8)
        settings = {
            "mode": mode, "token": self.token, "nonce": nonce,
            "expected_digest": self.baseline_digest if mode == "full" else "",
            "preload": self.preload,
            "modules": list(watched.WATCHED_MODULES), "classes": list(watched.WATCHED_CLASSES),
            "private_builtins": list(watched.WATCHED_PRIVATE_BUILTINS),
            "per_request_builtins": list(watched.PER_REQUEST_BUILTINS),
            "shell_methods": list(watched.WATCHED_SHELL_METHODS), "kernel_methods": list(watched.WATCHED_KERNEL_METHODS),
            "library_threads": list(watched.LIBRARY_THREADS),
            "packages": list(watched.course_packages()), "readable": readable_roots(),
            "course_root": str(Path(self.course_root or watched.COURSE_ROOT).resolve()) + "/",
            "course_readable": [str(path) + "/" for path in course_readable_paths()],
        }
        # One line holding the probe as a string: IPython tokenises and transforms a cell's text in Python, which
        # for the probe's 10 KB cost about 20 ms a probe; a single string token is compiled by Python itself.
        probe = f"{PROBE_SOURCE}\n_grading_probe({settings!r})\ndel _grading_probe, _install_audit_hook\n"
        cell = new_code_cell(f"exec(compile({probe!r}, '<grading probe>', 'exec'))")
        original = self.nb.cells[index] if index < len(self.nb.cells) else None
        try:
            self.execute_cell(cell, index, store_history=False)
        finally:  # nbclient puts the cell it ran at its index in the notebook: put the real one back
            if original is not None:
                self.nb.cells[index] = original
        marker = f"GRADING-{self.token}-{nonce} "
        text = "".join(output.get("text", "") for output in cell.outputs if output.get("name") == "stdout")
        for line in text.splitlines():
            if line.startswith(marker):
                answer = json.loads(line[len(marker):])
                if answer["watched"] is None:  # the same digest as the baseline's: nothing replaced
                    answer["watched"] = self.baseline_watched
                return answer
        errors = [f"{output.get('ename')}: {output.get('evalue')}" for output in cell.outputs if output.output_type == "error"]
        # The probe is ours and ran before in this kernel: if it cannot answer now, student code is in the way.
        return {"watched": {"tamper probe": "no answer"}, "namespace": {}, "threads": [], "cwd": "", "events": [
            "the tamper probe got no answer" + (f" ({errors[0]})" if errors else "")]}

    def _report(self, resources) -> None:
        if self.review or self.notes:
            lines = ["**Grading notes.**"]
            lines += [f"- flagged for manual review: {reason}" for reason in self.review]
            lines += [f"- {note}" for note in self.notes]
            self.nb.cells.insert(0, new_markdown_cell("\n".join(lines)))
        nbgrader = (resources or {}).get("nbgrader", {})
        key = nbgrader.get("notebook", "")
        REPORTS[key] = {"review": list(self.review), "notes": list(self.notes)}
        if resources is not None:
            resources.setdefault("grading", {})["review"] = list(self.review)


def readable_roots() -> list[str]:
    """What the kernel may read without being reported: the Python installation, the system, the course's packages and data."""
    roots = {sys.prefix, sys.base_prefix, "/usr", "/etc", "/lib", "/lib64", "/proc", "/sys", "/dev", "/tmp"}
    roots |= {str(path) for path in course_readable_paths()}
    return sorted(root.rstrip("/") + "/" for root in roots)


def course_readable_paths() -> list[Path]:
    """The parts of the course a grading kernel needs: its packages, weights/ and data/."""
    root = watched.COURSE_ROOT
    paths = [root / package.replace(".", "/") for package in watched.course_packages()]
    paths += [root / folder for folder in watched.COURSE_DATA_FOLDERS]
    return [path for path in paths if path.exists()]


class FlagForReview(NbGraderPreprocessor):
    """After SaveAutoGrades: every grade of a flagged notebook needs a manual grade."""

    def preprocess(self, nb, resources):
        review = resources.get("grading", {}).get("review", [])
        if review:
            info = resources["nbgrader"]
            with Gradebook(info["db_url"]) as gradebook:
                notebook = gradebook.find_submission_notebook(info["notebook"], info["assignment"], info["student"])
                for grade in notebook.grades:
                    grade.needs_manual_grade = True
                gradebook.db.commit()
        return nb, resources
