"""Grades a whole class: serial set-up, a parallel fan-out through Dask, then export.

1. Serial: submissions checked and put in submitted/ (intake.py), the lab registered in the
   gradebook (`nbgrader generate_assignment` if it is not there yet), the students added.
2. Parallel: one task per (lab, student) on a Dask cluster (a LocalCluster of one
   single-threaded worker per core, or SCHEDULER=tcp://HOST:8786); each task runs
   `python -m grading.submission` in a process of its own, forked from the worker's warm
   grading process (warm.py) so that it skips nbgrader's imports. A worker that dies takes its
   grading processes with it and Dask runs its tasks on another worker; a failed
   submission is tried once more, then reported with its reason.
3. Serial: grades.csv exported.

Re-running resumes: a submission whose notebook has not changed since it was graded, and
whose grade is in the gradebook, is skipped unless `force`. The ledger of what was graded
lives in .grading/results/, beside the gradebook and out of every kernel's sight.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from grading import intake, warm
from grading.submission import RESULT_PREFIX

SUBMISSION_TIMEOUT_SECONDS = 1800  # a lab has at most a few dozen cells of at most 300 s; beyond this something hangs
BIN = Path(sys.executable).parent


class GradingRefused(Exception):
    """Grading cannot start (no sandbox, no such lab): the message says what to do."""


@dataclass
class Settings:
    root: Path
    db_url: str = ""
    scheduler: str = ""
    workers: int = 0  # 0: one per core
    force: bool = False
    unsandboxed: bool = False
    memory_limit: int = 4 * 2**30
    max_notebook_bytes: int = intake.MAX_NOTEBOOK_BYTES
    export: bool = True
    log: callable = field(default=print)

    @property
    def gradebook_url(self) -> str:
        return self.db_url or f"sqlite:///{self.root / 'gradebook.db'}"


def redact(url: str) -> str:
    """A database URL without its password, for messages."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return url


def nbgrader_environment(settings: Settings) -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("NBGRADER_EXECUTION", None)
    if settings.db_url:
        env["GRADING_DB_URL"] = settings.db_url
    return env


def run_nbgrader(settings: Settings, *args: str) -> None:
    result = subprocess.run([str(BIN / "nbgrader"), *args, f"--CourseDirectory.root={settings.root}", "--log-level=ERROR"],
                            cwd=repository_root(), env=nbgrader_environment(settings), capture_output=True, text=True)
    if result.returncode:
        raise GradingRefused(f"nbgrader {args[0]} failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")


def repository_root() -> Path:
    """Where nbgrader_config.py is: nbgrader reads it from its working directory."""
    return Path(__file__).resolve().parent.parent


def check_sandbox(settings: Settings) -> None:
    from grading.sandbox import bubblewrap

    if settings.unsandboxed:
        settings.log("!" * 78)
        settings.log("!! UNSANDBOXED=1: student code runs with YOUR permissions, can read solutions/, write the")
        settings.log("!! gradebook and reach the network. Tampering is still detected, but nothing is contained.")
        settings.log("!" * 78)
        return
    if bubblewrap() is None:
        raise GradingRefused("no sandbox: bubblewrap is not installed. Install it (Debian/Ubuntu: "
                             "sudo apt-get install -y bubblewrap) or, to grade without one, set UNSANDBOXED=1")
    probe = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "--proc", "/proc", "true"],
                           capture_output=True, text=True)
    if probe.returncode:
        raise GradingRefused(f"bubblewrap cannot make a sandbox here ({probe.stderr.strip()}); "
                             "grade as root, enable unprivileged user namespaces, or set UNSANDBOXED=1")


def lab_grade_ids(root: Path) -> dict[str, set[str]]:
    """The graded and answer cells of every lab in the source folder, by lab."""
    labs = {}
    for folder in sorted((root / "solutions").iterdir()) if (root / "solutions").exists() else []:
        notebook = folder / f"{folder.name}.ipynb"
        if notebook.exists():
            labs[folder.name] = intake.grade_ids(json.loads(notebook.read_text()))
    return labs


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ledger_path(root: Path, lab: str, student: str) -> Path:
    return root / ".grading" / "results" / lab / f"{student}.json"


def collect(settings: Settings, lab: str, source: Path | None, labs: dict[str, set[str]]) -> tuple[list[str], list[str]]:
    """The students of `lab` ready to grade, and one line per refused submission."""
    problems = []
    if source is not None:
        submissions, problems = intake.read_submissions(source, lab)
        submissions, duplicates = intake.refuse_duplicates(submissions)
        problems += duplicates
    else:
        submissions = [intake.Submission(path.parent.parent.name, lab, str(path.relative_to(settings.root)), path.read_bytes())
                       for path in sorted((settings.root / "submitted").glob(f"*/{lab}/{lab}.ipynb"))]
    others = {name: ids for name, ids in labs.items() if name != lab}
    students = []
    for submission in submissions:
        reason = intake.check(submission, labs.get(lab, set()), others, settings.max_notebook_bytes)
        if reason:
            problems.append(f"{submission.student} ({submission.origin}): {reason}; not graded")
            continue
        target = settings.root / "submitted" / submission.student / lab / f"{lab}.ipynb"
        if source is not None and (not target.exists() or target.read_bytes() != submission.content):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(submission.content)
        students.append(submission.student)
    return students, problems


def prepare_gradebook(settings: Settings, lab: str, students: list[str]) -> None:
    """The serial part: the lab and its students in the gradebook, before any parallel writer."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(settings.gradebook_url) as gradebook:
        try:
            gradebook.find_assignment(lab)
            registered = True
        except MissingEntry:
            registered = False
    if not registered:
        run_nbgrader(settings, "generate_assignment", lab, "--force")
    with Gradebook(settings.gradebook_url) as gradebook:
        for student in students:
            gradebook.update_or_create_student(student)


def already_graded(settings: Settings, lab: str, student: str) -> bool:
    from nbgrader.api import Gradebook, MissingEntry

    ledger = ledger_path(settings.root, lab, student)
    if settings.force or not ledger.exists():
        return False
    record = json.loads(ledger.read_text())
    submitted = settings.root / "submitted" / student / lab / f"{lab}.ipynb"
    if record.get("status") != "graded" or record.get("digest") != digest(submitted):
        return False
    with Gradebook(settings.gradebook_url) as gradebook:
        try:
            gradebook.find_submission(lab, student)
        except MissingEntry:
            return False
    return True


def grading_environment() -> dict:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one core per worker: more threads only fight
    env.pop("NBGRADER_EXECUTION", None)
    env.pop("GRADING_DB_URL", None)  # given to each submission's process alone
    return env


# This worker's warm grading processes (grading/warm.py), one per course: (process, socket path).
WARM_PROCESSES: dict[str, tuple[subprocess.Popen, str]] = {}
WARM_LOCK = threading.Lock()


def warm_socket(root: str, restart: bool = False) -> str:
    """The socket of this worker's warm grading process for `root`, started if it is not running."""
    with WARM_LOCK:
        process, path = WARM_PROCESSES.get(root, (None, ""))
        if process is not None and (restart or process.poll() is not None):
            stop_process(process)
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
            process = None
        if process is None:
            path = os.path.join(tempfile.mkdtemp(prefix="grading-warm-"), "socket")  # a folder only we can open
            process = subprocess.Popen([sys.executable, "-m", "grading.warm", "--socket", path, "--course", root],
                                       cwd=repository_root(), env=grading_environment(), stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            lines = []
            for line in iter(process.stdout.readline, b""):
                if line.decode(errors="replace").strip() == warm.READY:
                    break
                lines.append(line.decode(errors="replace"))
            else:
                stop_process(process)
                raise RuntimeError("the warm grading process did not start: " + "".join(lines)[-1000:])
            WARM_PROCESSES[root] = (process, path)
        return path


def stop_process(process: subprocess.Popen) -> None:
    """Close a warm process's stdin, which tells it to exit; the submissions it started are not waited for."""
    process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def stop_warm_processes() -> int:
    """Stop this worker's warm grading processes (run on every worker when a class is graded)."""
    with WARM_LOCK:
        for process, path in WARM_PROCESSES.values():
            stop_process(process)
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
        stopped = len(WARM_PROCESSES)
        WARM_PROCESSES.clear()
    return stopped


def grade_one(root: str, lab: str, student: str, db_url: str, unsandboxed: bool, memory_limit: int) -> dict:
    """A Dask task: one submission graded by a fork of this worker's warm grading process (grading/warm.py).

    The child is `python -m grading.submission` with nbgrader already imported, in a session of its
    own, talking over a Unix socket: if this worker dies, the socket closes and the child kills its
    group at once (and bubblewrap the kernel), so a retry elsewhere never races a leftover.
    """
    argv = ["--root", root, "--lab", lab, "--student", student, "--memory-limit", str(memory_limit)]
    request = json.dumps({"argv": argv + (["--unsandboxed"] if unsandboxed else []),
                          "env": {"GRADING_DB_URL": db_url} if db_url else {}}) + "\n"
    started = time.perf_counter()
    for attempt in (1, 2):
        try:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            connection.connect(warm_socket(root, restart=attempt > 1))
            connection.sendall(request.encode())
            break
        except OSError:  # the warm process died between submissions: start another, once
            connection.close()
            if attempt == 2:
                raise
    timed_out = threading.Event()
    with connection, connection.makefile("rb") as stream:
        first = stream.readline().decode(errors="replace")
        timer = None
        if first.startswith(warm.PID_PREFIX):
            child = int(first[len(warm.PID_PREFIX):])

            def stop_child() -> None:
                timed_out.set()
                os.killpg(child, signal.SIGKILL)

            timer = threading.Timer(SUBMISSION_TIMEOUT_SECONDS, stop_child)
            timer.start()
        try:
            output = first.encode() + stream.read()
        finally:
            if timer is not None:
                timer.cancel()
    if timed_out.is_set():
        return {"lab": lab, "student": student, "status": "failed",
                "error": f"took over {SUBMISSION_TIMEOUT_SECONDS} s and was stopped", "seconds": SUBMISSION_TIMEOUT_SECONDS}
    text = output.decode(errors="replace")
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
            result["seconds"] = round(time.perf_counter() - started, 2)
            if result["status"] != "graded":
                result["log"] = text[-2000:]
            return result
    last = [line for line in text.splitlines() if line.strip()][-1:] or ["no output"]
    return {"lab": lab, "student": student, "status": "failed", "error": f"the grading process gave no result: {last[0][:300]}",
            "seconds": round(time.perf_counter() - started, 2), "log": text[-2000:]}


def start_client(settings: Settings):
    from distributed import Client, LocalCluster

    if settings.scheduler:
        return Client(settings.scheduler), None
    import dask

    workers = settings.workers or os.cpu_count() or 1
    # One single-threaded worker per core: a kernel uses one core. The kernels' memory is capped by the
    # sandbox, so Dask's own limit (which watches the worker process, not its children) is off.
    # Dask's nanny writes its pre-spawn settings (OMP_NUM_THREADS=1, MALLOC_TRIM_THRESHOLD_, ...) into
    # this process's environment before it starts a worker, and every program this process starts
    # afterwards inherits them: serial nbgrader after a parallel run took 1.7 times as long, on one
    # thread. The grading processes set their own threads (grading_environment), so none are needed.
    environment = dict(os.environ)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {}}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0,
                               dashboard_address=None, silence_logs=40)
    os.environ.clear()
    os.environ.update(environment)
    return Client(cluster), cluster


def record(settings: Settings, result: dict) -> None:
    ledger = ledger_path(settings.root, result["lab"], result["student"])
    ledger.parent.mkdir(parents=True, exist_ok=True)
    submitted = settings.root / "submitted" / result["student"] / result["lab"] / f"{result['lab']}.ipynb"
    ledger.write_text(json.dumps({**result, "digest": digest(submitted) if submitted.exists() else ""}, indent=1))


def describe(result: dict) -> str:
    name = f"{result['lab']} {result['student']}"
    if result["status"] != "graded":
        return f"FAILED   {name}: {result['error']}"
    line = f"graded   {name}: {result['score']:g} / {result['max_score']:g} ({result['seconds']:.0f} s)"
    if result.get("review"):
        line += "  REVIEW: " + "; ".join(result["review"][:3]) + (" ..." if len(result["review"]) > 3 else "")
    if result.get("notes"):
        line += "  note: " + "; ".join(result["notes"])
    return line


def grade_class(settings: Settings, labs_to_grade: list[str], source: Path | None = None, client=None) -> list[dict]:
    """Grades every submission of `labs_to_grade`; returns one result per submission graded or failed this run."""
    from tqdm import tqdm

    settings.root = settings.root.resolve()
    if str(BIN) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # nbgrader runs `alembic` to create a gradebook
    check_sandbox(settings)
    labs = lab_grade_ids(settings.root)
    unknown = [lab for lab in labs_to_grade if lab not in labs]
    if unknown:
        raise GradingRefused(f"no such lab: {', '.join(unknown)} (the labs are {', '.join(labs) or 'none'})")
    if source is not None and len(labs_to_grade) != 1:
        raise GradingRefused("FROM= takes the submissions of one lab: name it with LAB=")
    settings.log(f"gradebook: {redact(settings.gradebook_url)}")
    jobs, skipped = [], 0
    for lab in labs_to_grade:
        students, problems = collect(settings, lab, source, labs)
        for problem in problems:
            settings.log(f"REFUSED  {lab} {problem}")
        prepare_gradebook(settings, lab, students)
        for student in students:
            if already_graded(settings, lab, student):
                skipped += 1
            else:
                jobs.append((lab, student))
    if skipped:
        settings.log(f"{skipped} submission(s) already graded and unchanged: skipped (FORCE=1 grades them again)")
    results = []
    if jobs:
        own_client = client is None
        cluster = None
        if own_client:
            client, cluster = start_client(settings)
        try:
            results = dispatch(settings, client, jobs, tqdm)
        finally:
            try:
                client.run(stop_warm_processes)
            except Exception:  # a worker that died took its warm processes with it
                pass
            if own_client:
                client.close()
                if cluster is not None:
                    cluster.close()
    for result in results:
        settings.log(describe(result))
    if settings.export:
        run_nbgrader(settings, "export", "--to", str(settings.root / "grades.csv"))
        settings.log(f"wrote {settings.root / 'grades.csv'}")
    return results


def dispatch(settings: Settings, client, jobs: list[tuple[str, str]], progress) -> list[dict]:
    """Runs the jobs on the cluster; a failed one is tried once more before it is reported."""
    from distributed import as_completed

    def submit(lab: str, student: str, attempt: int):
        return client.submit(grade_one, str(settings.root), lab, student, settings.db_url, settings.unsandboxed,
                             settings.memory_limit, key=f"grade-{lab}-{student}-{attempt}", pure=False)

    futures = as_completed([submit(lab, student, 1) for lab, student in jobs])
    results, bar = [], progress(total=len(jobs), unit="submission", desc="grading", file=sys.stderr)
    attempts = {}
    for future in futures:
        try:
            result = future.result()
        except Exception as error:  # the task itself failed, e.g. its worker died three times over
            lab, student = _job_of(future.key)
            result = {"lab": lab, "student": student, "status": "failed", "error": f"{type(error).__name__}: {error}", "seconds": 0}
        job = (result["lab"], result["student"])
        if result["status"] != "graded" and attempts.get(job, 1) < 2:
            attempts[job] = 2
            settings.log(f"retrying {job[0]} {job[1]}: {result['error']}")
            futures.add(submit(*job, 2))
            continue
        record(settings, result)
        results.append(result)
        bar.update(1)
    bar.close()
    return sorted(results, key=lambda result: (result["lab"], result["student"]))


def _job_of(key: str) -> tuple[str, str]:
    """(lab, student) from a task key `grade-<lab>-<student>-<attempt>`; labs hold no '-', student ids may."""
    body = key[len("grade-"):].rsplit("-", 1)[0]
    lab, student = body.split("-", 1)
    return lab, student
