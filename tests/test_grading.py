"""Grading a class: sandboxed, tamper-proof, parallel on a real Dask cluster, into SQLite and a real PostgreSQL.

A three-exercise course (tests/tiny_course.py) stands in for a lab, so that each submission
grades in seconds. One class of attacks is graded through the instructor's command
(`python -m grading autograde --from FOLDER`); a second class loses a Dask worker to SIGKILL
mid-grade; a third goes into a PostgreSQL server started here. The benchmark
(benchmarks/grading.py) grades a real lab at scale.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from tiny_course import LAB, RIGHT, WRONG_DOUBLE, make_course, nbgrader, submission

from grading import intake
from grading.class_grader import Settings, _job_of, grade_class, redact, start_client

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def attacks(root: Path, server_port: int) -> dict[str, dict[str, str]]:
    """Answers by student: each tries ways to gain points it has not earned, or to escape, one per answer cell."""
    solutions = root / "solutions" / LAB / f"{LAB}.ipynb"
    return {
        "right": RIGHT,
        "wrong": {**RIGHT, "double": WRONG_DOUBLE},
        "escapes": {
            # run the reference read from solutions/ on disk, else fall back on a wrong answer
            "double": ("import json\ntry:\n"
                       f"    cells = json.load(open({str(solutions)!r}))['cells']\n"
                       "    exec(next(''.join(c['source']) for c in cells if 'def double' in ''.join(c['source'])))\n"
                       "except OSError:\n    def double(x):\n        return 3 * x"),
            "square": (f"try:\n    open({str(root / 'gradebook.db')!r}, 'ab').write(b'corrupted')\nexcept OSError:\n    pass\n"
                       "import socket\ntry:\n"
                       f"    socket.create_connection(('127.0.0.1', {server_port}), timeout=3).sendall(b'escaped')\n"
                       "except OSError:\n    pass\n" + RIGHT["square"]),
            "negate": ("import subprocess\nchildren = []\ntry:\n    for _ in range(1000):\n"
                       "        children.append(subprocess.Popen(['sleep', '600']))\nexcept OSError:\n    pass\n"
                       + RIGHT["negate"] + "\nhoard = bytearray(6 * 2**30)"),
        },
        "patches-allclose": {**RIGHT, "double": WRONG_DOUBLE + "\nimport torch\ntorch.allclose = lambda *args, **kwargs: True"},
        "tampers-otherwise": {
            "double": "def double(x):\n    return 0 * x\nreference_input = torch.zeros(5)",  # the hidden check's input, rebound
            "square": RIGHT["square"] + ("\nget_ipython().events.register('pre_run_cell', "
                                         "lambda info: setattr(torch, 'equal', lambda *args, **kwargs: True))"),
            "negate": "def negate(x):\n    return x\nimport builtins\nbuiltins.abs = lambda value: 0",
        },
        "kills-kernel": {**RIGHT, "negate": "import os\nos._exit(1)"},
        "loops": {**RIGHT, "square": "while True:\n    pass"},
    }


def grades_of(db_url: str, student: str) -> dict:
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gradebook:
        notebook = gradebook.find_submission_notebook(LAB, LAB, student)
        return {"score": notebook.score, "needs_manual_grade": notebook.needs_manual_grade,
                "cells": {grade.name: grade.score for grade in notebook.grades}}


def outlived(marker: str, patience: float = 120) -> list[str]:
    """What is still running of a sandbox after `patience` seconds: a grading process's watchdog needs a moment."""
    deadline = time.time() + patience
    while (found := sandbox_processes(marker)) and time.time() < deadline:
        time.sleep(1)
    return found


def sandbox_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker` (a course folder), or that run as a sandbox user."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            uid = Path(f"/proc/{pid}/status").read_text().split("\nUid:")[1].split()[0]
        except (OSError, IndexError):
            continue
        if (marker in command and "pytest" not in command) or int(uid) >= 200_000:
            found.append(f"{pid} (uid {uid}): {command[:120]}")
    return found


@pytest.fixture(scope="module")
def listener():
    """A TCP server on loopback that records whatever reaches it."""
    server = socket.create_server(("127.0.0.1", 0))
    received, stopped = [], threading.Event()

    def serve():
        server.settimeout(0.5)
        while not stopped.is_set():
            try:
                connection, _ = server.accept()
                received.append(connection.recv(100))
                connection.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stopped.set()
    thread.join()
    server.close()


@pytest.fixture(scope="module")
def attacked_class(tmp_path_factory, listener):
    """A class of attacks and bad files, graded with the instructor's one command on a 2-worker local cluster."""
    port, received = listener
    base = tmp_path_factory.mktemp("attacked")
    root = make_course(base / "course")
    incoming = base / "incoming"
    incoming.mkdir()
    for student, answers in attacks(root, port).items():
        nbformat.write(submission(root, answers), incoming / f"{student}_{LAB}.ipynb")
    (incoming / f"empty_{LAB}.ipynb").write_bytes(b"")
    (incoming / f"not-json_{LAB}.ipynb").write_text("print('hello')")
    other_lab = submission(root, RIGHT)
    for cell in other_lab.cells:
        if "nbgrader" in cell.metadata:
            cell.metadata.nbgrader["grade_id"] = "lab2_" + cell.metadata.nbgrader["grade_id"]
    nbformat.write(other_lab, incoming / f"other-lab_{LAB}.ipynb")
    (incoming / "twin").mkdir()
    nbformat.write(submission(root, RIGHT), incoming / f"twin_{LAB}.ipynb")
    nbformat.write(submission(root, RIGHT), incoming / "twin" / f"{LAB}.ipynb")
    (incoming / f"huge_{LAB}.ipynb").write_bytes(b" " * 100_000_000)
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "grading", "autograde", LAB, "--root", str(root), "--from", str(incoming),
                          "--workers", "2", "--memory-limit", "2G"],
                         cwd=ROOT, env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}, capture_output=True, text=True, timeout=900)
    print(f"graded the attacked class in {time.perf_counter() - started:.0f} s")
    return {"root": root, "run": run, "received": received, "db": f"sqlite:///{root / 'gradebook.db'}",
            "results": {json.loads(path.read_text())["student"]: json.loads(path.read_text())
                        for path in (root / ".grading" / "results" / LAB).glob("*.json")}}


def test_every_submission_is_graded_and_bad_files_get_one_line_each(attacked_class):
    run = attacked_class["run"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(attacked_class["results"]) == set(attacks(attacked_class["root"], 0))
    lines = run.stdout.splitlines()
    for student, reason in [("empty", "the file is empty"), ("not-json", "not a notebook"), ("other-lab", f"not a notebook of {LAB}"),
                            ("twin", "2 submissions"), ("huge", "100 MB, over the 20 MB limit")]:
        refusals = [line for line in lines if line.startswith("REFUSED") and f" {student}" in line]
        assert len(refusals) == 1 and reason in refusals[0], (student, refusals)


def test_honest_submissions_score_as_they_deserve(attacked_class):
    db = attacked_class["db"]
    right, wrong = grades_of(db, "right"), grades_of(db, "wrong")
    assert right["score"] == 3 and not right["needs_manual_grade"]
    assert wrong["score"] == 2 and wrong["cells"]["check_double"] == 0 and not wrong["needs_manual_grade"]
    assert not attacked_class["results"]["right"]["review"]


def test_escapes_are_contained_and_reported(attacked_class):
    """Read solutions/, write the gradebook, open a socket, fork many processes, allocate past the cap: each fails, each is reported."""
    result = grades_of(attacked_class["db"], "escapes")
    assert result["cells"] == {"check_double": 0, "check_square": 1, "check_negate": 1}, "the reference read from solutions/ ran"
    assert result["needs_manual_grade"]
    review = " ".join(attacked_class["results"]["escapes"]["review"])
    for reported in ("solutions/", "gradebook.db", "used the network", "started a process"):
        assert reported in review, reported
    assert b"corrupted" not in (attacked_class["root"] / "gradebook.db").read_bytes()
    assert attacked_class["received"] == [], "a kernel reached the network"
    notebook = nbformat.read(attacked_class["root"] / "autograded" / "escapes" / LAB / f"{LAB}.ipynb", as_version=4)
    errors = [output.ename for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs if output.output_type == "error"]
    assert "MemoryError" in errors, errors
    assert not sandbox_processes(str(attacked_class["root"])), "processes of a sandbox outlived it"


def test_patching_allclose_gains_nothing_and_is_flagged(attacked_class):
    result = grades_of(attacked_class["db"], "patches-allclose")
    assert result["cells"]["check_double"] == 0 and result["needs_manual_grade"]
    review = attacked_class["results"]["patches-allclose"]["review"]
    assert "torch.allclose" in review[0] and "check_double" in review[0]
    notes = nbformat.read(attacked_class["root"] / "autograded" / "patches-allclose" / LAB / f"{LAB}.ipynb", as_version=4).cells[0]
    assert "Grading notes" in notes.source and "torch.allclose" in notes.source  # the reason, in the student's feedback


def test_rebinding_a_hook_and_builtins_are_caught_at_the_next_check(attacked_class):
    result = grades_of(attacked_class["db"], "tampers-otherwise")
    assert result["score"] == 0 and result["needs_manual_grade"]
    review = {re.search(r"\((check_\w+)\)", line)[1]: line for line in attacked_class["results"]["tampers-otherwise"]["review"]
              if re.search(r"\((check_\w+)\)", line)}
    assert "reference_input" in review["check_double"]
    assert "IPython event hooks (pre_run_cell)" in review["check_square"]
    assert "builtins.abs" in review["check_negate"]


def test_a_dead_kernel_keeps_the_earlier_points(attacked_class):
    result = grades_of(attacked_class["db"], "kills-kernel")
    assert result["cells"] == {"check_double": 1, "check_square": 1, "check_negate": 0}
    assert "the kernel died" in " ".join(attacked_class["results"]["kills-kernel"]["notes"])


def test_an_infinite_loop_is_interrupted_inside_the_sandbox(attacked_class):
    result = grades_of(attacked_class["db"], "loops")
    assert result["cells"] == {"check_double": 1, "check_square": 0, "check_negate": 1}


def test_rerunning_skips_what_is_graded(attacked_class):
    run = subprocess.run([sys.executable, "-m", "grading", "autograde", LAB, "--root", str(attacked_class["root"]), "--no-export"],
                         cwd=ROOT, env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"{len(attacks(attacked_class['root'], 0))} submission(s) already graded" in run.stdout
    assert "0 graded, 0 failed" in run.stdout


def test_a_worker_killed_mid_grade_loses_nothing(tmp_path):
    """SIGKILL to a worker while it grades: Dask runs its submission on another worker, once in the gradebook, no orphans."""
    root = make_course(tmp_path / "course")
    students = ["ada", "ben", "cy"]
    for student in students:
        folder = root / "submitted" / student / LAB
        folder.mkdir(parents=True)
        nbformat.write(submission(root, RIGHT), folder / f"{LAB}.ipynb")
    log: list[str] = []
    # The grader's own cluster: a LocalCluster made here with Dask's defaults wrote OMP_NUM_THREADS=1 and
    # MALLOC_TRIM_THRESHOLD_=65536 into this process's environment, and every later test's kernels ran with them.
    client, cluster = start_client(Settings(root=root, workers=2))
    with cluster, client:
        worker_pids = client.run(os.getpid)
        killed = []

        def kill_a_busy_worker():
            deadline = time.time() + 600
            while time.time() < deadline and not killed:
                for pid in worker_pids.values():
                    # Dask runs tasks in a thread of the worker: its grading process is that thread's child
                    if any(path.read_text().strip() for path in Path(f"/proc/{pid}/task").glob("*/children")):
                        time.sleep(3)  # well into grading: its kernel is up
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        return
                time.sleep(0.2)

        killer = threading.Thread(target=kill_a_busy_worker)
        killer.start()
        results = grade_class(Settings(root=root, log=log.append, export=False), [LAB], client=client)
        killer.join()
    assert killed, "no worker was seen grading"
    assert sorted(result["student"] for result in results) == students
    assert all(result["status"] == "graded" and result["score"] == 3 for result in results), results
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        assert sorted(s.student_id for s in gradebook.find_assignment(LAB).submissions) == students
        for student in students:
            assert len(gradebook.find_submission_notebook(LAB, LAB, student).grades) == 3
    assert not outlived(str(root)), "a kernel or grading process outlived its worker"


def test_rerunning_after_the_scheduler_died_finishes_the_rest(tmp_path):
    """The coordinator (and with it the scheduler and its workers) killed after one submission: the same command finishes."""
    root = make_course(tmp_path / "course")
    students = ["eve", "fay", "gus"]
    for student in students:
        folder = root / "submitted" / student / LAB
        folder.mkdir(parents=True)
        nbformat.write(submission(root, RIGHT), folder / f"{LAB}.ipynb")
    command = [sys.executable, "-m", "grading", "autograde", LAB, "--root", str(root), "--workers", "1", "--no-export"]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    coordinator = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
    ledger = root / ".grading" / "results" / LAB
    deadline = time.time() + 600
    while not list(ledger.glob("*.json")) and time.time() < deadline and coordinator.poll() is None:
        time.sleep(0.2)
    os.killpg(coordinator.pid, signal.SIGKILL)
    coordinator.wait()
    graded_before = len(list(ledger.glob("*.json")))
    assert 1 <= graded_before < len(students)
    assert not outlived(str(root)), "grading outlived its scheduler"
    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{graded_before} submission(s) already graded" in rerun.stdout
    assert f"{len(students) - graded_before} graded, 0 failed" in rerun.stdout
    assert all(grades_of(f"sqlite:///{root / 'gradebook.db'}", student)["score"] == 3 for student in students)


def postgres_binaries() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    pytest.fail("PostgreSQL is not installed: `make test` installs it (apt-get install -y postgresql)")


@pytest.fixture
def postgres():
    """A real PostgreSQL server on a loopback port, run by the unprivileged `postgres` user, with a password."""
    import tempfile

    binaries = postgres_binaries()
    folder = Path(tempfile.mkdtemp(prefix="grading-postgres-"))  # pytest's own folders are closed to other users
    password = "s3cret-Pw-not-for-logs"
    (folder / "pw").write_text(password + "\n")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(folder, "postgres")
        shutil.chown(folder / "pw", "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([*as_postgres, str(binaries / "initdb"), "-D", str(folder / "data"), "-U", "grader", "--auth=scram-sha-256",
                    f"--pwfile={folder / 'pw'}"], check=True, capture_output=True)
    subprocess.run([*as_postgres, str(binaries / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "log"), "-w",
                    "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://grader:{password}@127.0.0.1:{port}/postgres", password
    finally:
        subprocess.run([*as_postgres, str(binaries / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def dask_cluster(tmp_path):
    """A scheduler and two single-threaded workers started with Dask's own commands, as on several machines."""
    address_file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(address_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = subprocess.Popen([str(BIN / "dask"), "worker", "--scheduler-file", str(address_file), "--nworkers", "2",
                                "--nthreads", "1", "--memory-limit", "0", "--no-dashboard"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from distributed import Client

        deadline = time.time() + 60
        while not address_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(address_file.read_text())["address"]
        with Client(address) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for process in (workers, scheduler):
            process.terminate()
            process.wait(timeout=30)


def test_a_class_graded_into_postgresql_by_a_separate_dask_cluster(tmp_path, postgres, dask_cluster):
    """What grading on several machines takes: the gradebook in PostgreSQL, the work on an existing Dask scheduler."""
    url, password = postgres
    root = make_course(tmp_path / "course", env={"GRADING_DB_URL": url})
    for student, answers in {"right": RIGHT, "wrong": {**RIGHT, "double": WRONG_DOUBLE}}.items():
        folder = root / "submitted" / student / LAB
        folder.mkdir(parents=True)
        nbformat.write(submission(root, answers), folder / f"{LAB}.ipynb")
    log: list[str] = []
    results = grade_class(Settings(root=root, db_url=url, scheduler=dask_cluster, log=log.append), [LAB])
    assert {result["student"]: result["score"] for result in results} == {"right": 3, "wrong": 2}
    assert grades_of(url, "right")["score"] == 3 and grades_of(url, "wrong")["score"] == 2
    assert not (root / "gradebook.db").exists(), "nothing went to SQLite"
    import csv

    exported = {row["student_id"]: float(row["raw_score"]) for row in csv.DictReader((root / "grades.csv").open())}
    assert exported == {"right": 3.0, "wrong": 2.0}
    written = "\n".join(log) + "".join(path.read_text() for path in (root / ".grading").rglob("*.json"))
    assert password not in written and "grader:***@127.0.0.1" in written


def test_grading_refuses_to_run_without_a_sandbox_unless_told(tmp_path):
    root = make_course(tmp_path / "course")
    env = {**os.environ, "PATH": str(BIN)}  # no bwrap on this PATH
    refused = subprocess.run([sys.executable, "-m", "grading", "autograde", LAB, "--root", str(root)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "bubblewrap is not installed" in refused.stderr and "UNSANDBOXED=1" in refused.stderr
    told = subprocess.run([sys.executable, "-m", "grading", "autograde", LAB, "--root", str(root), "--no-export"], cwd=ROOT,
                          env={**env, "UNSANDBOXED": "1"}, capture_output=True, text=True, timeout=600)
    assert told.returncode == 0, told.stderr
    assert "UNSANDBOXED=1: student code runs with YOUR permissions" in told.stdout


def test_a_local_cluster_leaves_the_instructors_environment_as_it_was(tmp_path):
    """Dask's nanny writes OMP_NUM_THREADS=1 and the like into its parent's environment; everything started
    from there afterwards (serial nbgrader in the benchmark, an export) would then run on one thread."""
    before = dict(os.environ)
    client, cluster = start_client(Settings(root=tmp_path, workers=1))
    try:
        assert dict(os.environ) == before
        assert client.submit(lambda: 1 + 1).result(timeout=60) == 2
    finally:
        client.close()
        cluster.close()


def test_kernels_share_one_read_only_font_list_built_once(tmp_path):
    """matplotlib would otherwise rebuild its font list in every kernel's empty /tmp (about 0.2 s a submission)."""
    from grading.sandbox import matplotlib_font_cache, sandbox_command

    cache = matplotlib_font_cache(tmp_path / "fonts")
    assert cache is not None and json.loads(cache.read_text())["ttflist"]
    built_at = cache.stat().st_mtime_ns
    assert matplotlib_font_cache(tmp_path / "fonts") == cache and cache.stat().st_mtime_ns == built_at  # not built again
    code = ("import logging, os; logging.basicConfig(level=logging.INFO); import matplotlib.font_manager;"
            "print(os.access('/tmp/matplotlib', os.W_OK), os.access(f'/tmp/matplotlib/{os.listdir(\"/tmp/matplotlib\")[0]}', os.W_OK))")
    for font_cache, rebuilt in ((cache, False), (None, True)):
        work, sockets = tmp_path / f"work-{rebuilt}", tmp_path / f"sockets-{rebuilt}"
        work.mkdir(), sockets.mkdir()
        command = sandbox_command([sys.executable, "-c", code], cwd=str(work), workdir=str(work), socket_dir=str(sockets),
                                  memory_limit=2**32, process_limit=128, file_size_limit=2**30, tmp_size=2**30, font_cache=font_cache)
        run = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert ("generated new fontManager" in run.stderr) == rebuilt, run.stderr
        assert run.stdout.split() == ["True", str(rebuilt)]  # matplotlib's folder writable; the shared list read-only


def test_reference_answers_of_every_lab_pass_the_intake():
    labs = {path.parent.name: intake.grade_ids(json.loads(path.read_text())) for path in (ROOT / "solutions").glob("*/*.ipynb")}
    for lab, ids in labs.items():
        released = intake.Submission("student", lab, "x", (ROOT / "labs" / lab / f"{lab}.ipynb").read_bytes())
        assert intake.check(released, ids, {k: v for k, v in labs.items() if k != lab}, intake.MAX_NOTEBOOK_BYTES) == ""


def test_the_grading_packages_are_pinned():
    pinned = {line.split("==")[0].lower() for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line}
    assert {"dask", "distributed", "psycopg", "psycopg-binary", "tqdm", "nbgrader"} <= pinned


def test_the_warm_grading_process_refuses_a_bad_request_and_exits_with_its_worker(tmp_path):
    """What each Dask worker keeps running between submissions: a malformed request gets one line, and
    closing its stdin (the worker's end) stops it, leaving nothing behind."""
    from grading import warm

    path = str(tmp_path / "socket")
    process = subprocess.Popen([sys.executable, "-m", "grading.warm", "--socket", path, "--course", str(tmp_path)],
                               cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert process.stdout.readline().decode().strip() == warm.READY
        for request in (b"not json at all\n", b'{"argv": "--lab 01_sampling"}\n'):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.connect(path)
                connection.sendall(request)
                answer = connection.makefile("rb").read().decode()
            assert answer.startswith("bad request:") and answer.count("\n") == 1, answer
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:  # a real request: the child says who it is
            connection.connect(path)
            connection.sendall(json.dumps({"argv": ["--root", str(tmp_path), "--lab", "missing", "--student", "x"]}).encode() + b"\n")
            lines = connection.makefile("rb").read().decode().splitlines()
        assert lines[0].startswith(warm.PID_PREFIX)
        assert json.loads(lines[-1].removeprefix("GRADING-RESULT "))["status"] == "failed"
        process.stdin.close()
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    assert not outlived(str(tmp_path), patience=10)


def test_passwords_are_redacted_and_task_keys_parse():
    assert redact("postgresql+psycopg://grader:pw@db.example:5432/course") == "postgresql+psycopg://grader:***@db.example:5432/course"
    assert redact("sqlite:////course/gradebook.db") == "sqlite:////course/gradebook.db"
    assert _job_of("grade-01_sampling-jo.ann-smith-2") == ("01_sampling", "jo.ann-smith")
    assert re.fullmatch(r"[A-Za-z0-9.-]+", "jo.ann-smith")


def test_torch_dynamo_is_preloaded_only_for_notebooks_that_may_train():
    from grading.watched import modules_to_preload

    assert "torch._dynamo" in modules_to_preload(["import torch", "optimizer = torch.optim.Adam(model.parameters())"])
    assert "torch._dynamo" in modules_to_preload(["from torch.optim import SGD"])
    assert "torch._dynamo" in modules_to_preload(["fast = torch.compile(model)"])
    assert "torch._dynamo" not in modules_to_preload(["# the optimal guidance scale", "optimizer_free = 1"])
    assert "matplotlib.pyplot" in modules_to_preload([])


def reference_answers(lab: str) -> dict[str, str]:
    """A lab's reference answers by exercise: its solution cells without their marker lines."""
    notebook = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    markers = ("### BEGIN SOLUTION", "### END SOLUTION")
    return {cell.metadata.nbgrader["grade_id"]: "\n".join(line for line in cell.source.splitlines() if line.strip() not in markers)
            for cell in notebook.cells if cell.get("metadata", {}).get("nbgrader", {}).get("solution")}


@pytest.mark.slow
def test_the_real_labs_graded_in_the_sandbox_score_full_marks_and_raise_no_alarm(tmp_path):
    """Each lab's reference answers, graded as `make autograde` grades them (sandboxed, 2 workers): full marks,
    nothing flagged. The labs' own setup and demo cells (pyplot's hooks and font cache, tqdm's thread,
    a check's scratch names rebound by a later demo, inference-mode tensors) are not tampering."""
    from conftest import LABS

    root = tmp_path / "course"
    for lab in LABS:
        shutil.copytree(ROOT / "solutions" / lab, root / "solutions" / lab)
        nbgrader("generate_assignment", lab, "--force", root=root)
        notebook = nbformat.read(root / "labs" / lab / f"{lab}.ipynb", as_version=4)
        answers = reference_answers(lab)
        for cell in notebook.cells:
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if grade_id in answers:
                cell.source = answers[grade_id]
        (root / "submitted" / "reference" / lab).mkdir(parents=True)
        nbformat.write(notebook, root / "submitted" / "reference" / lab / f"{lab}.ipynb")
    log: list[str] = []
    results = grade_class(Settings(root=root, workers=2, export=False, log=log.append), LABS)
    assert sorted(result["lab"] for result in results) == LABS, log
    for result in results:
        assert result["status"] == "graded", result
        assert result["score"] == result["max_score"] > 0, result
        assert not result["review"] and not result["needs_manual_grade"], result


def test_a_check_depends_on_the_names_it_reads_and_on_what_trusted_helpers_read():
    from grading.executor import names_read

    check = ("g = torch.Generator().manual_seed(0)\nx = noise(x)\nassert double(reference_input).sum() == 0\n"
             "@decorate\ndef helper(a, scale=default_scale):\n    local = 1\n    return a + model(inputs) + local\n"
             "helper(2)\n%time y = 1\nsquare = lambda q: q * weight")
    assert names_read(check) == {"torch", "noise", "x", "double", "reference_input", "decorate", "default_scale",
                                 "model", "inputs", "get_ipython", "weight"}
    assert names_read("def broken(:") is None  # then every name counts


def test_a_kernel_channel_waits_in_short_polls(monkeypatch):
    """pyzmq's asyncio poll can miss a message (nbclient#312) and sit out a cell's whole timeout: no single poll
    may wait longer than POLL_SLICE, a message is returned as soon as a poll sees it, and Empty still comes at the deadline."""
    import asyncio
    from queue import Empty

    from jupyter_client.channels import AsyncZMQSocketChannel

    from grading.kernel_client import POLL_SLICE, SlicedPollChannel

    asked: list[float | None] = []
    arrives_on_poll = 3

    async def poll(self, timeout=None):
        asked.append(timeout)
        if len(asked) == arrives_on_poll:
            return {"msg_type": "execute_reply"}
        await asyncio.sleep(min(timeout, 0.01))
        raise Empty

    monkeypatch.setattr(AsyncZMQSocketChannel, "get_msg", poll)
    channel = SlicedPollChannel.__new__(SlicedPollChannel)
    assert asyncio.run(channel.get_msg(timeout=600))["msg_type"] == "execute_reply"
    assert len(asked) == arrives_on_poll and all(timeout <= POLL_SLICE for timeout in asked)
    asked.clear()
    arrives_on_poll = 10**9
    with pytest.raises(Empty):
        asyncio.run(channel.get_msg(timeout=0.05))
    assert asked and all(timeout <= 0.05 for timeout in asked)


JAIL_REPORT = """
import json, os, resource, socket, sys
status = open("/proc/self/status").read()
def field(name):
    return status.split(f"\\n{name}:")[1].split()[0]
def readable(path):
    try:
        return sorted(os.listdir(path)) if os.path.isdir(path) else open(path).read()
    except OSError as error:
        return type(error).__name__
try:
    socket.create_connection(("127.0.0.1", 22), timeout=1)
    network = "reached"
except OSError as error:
    network = type(error).__name__
print(json.dumps({
    "uid": os.getuid(), "cwd": os.getcwd(), "root": sorted(os.listdir("/")),
    "processes": sorted(int(pid) for pid in os.listdir("/proc") if pid.isdigit()),
    "solutions": readable(SOLUTIONS), "course": readable(COURSE),
    "data_limit": resource.getrlimit(resource.RLIMIT_DATA)[0], "process_limit": resource.getrlimit(resource.RLIMIT_NPROC)[0],
    "capabilities": field("CapEff"), "no_new_privs": field("NoNewPrivs"), "network": network,
    "environment": sorted(os.environ), "path": sys.path, "torch_loaded": "torch" in sys.modules,
}))
"""


def start_zygote(folder: Path) -> tuple[subprocess.Popen, str]:
    from grading.sandbox import kernel_environment
    from grading.zygote import READY

    path = str(folder / "zygote")
    process = subprocess.Popen([sys.executable, "-m", "grading.zygote", "--socket", path, "--course", str(folder)],
                               cwd=ROOT, env={**kernel_environment(), "OMP_NUM_THREADS": "1"},
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout.readline().decode().strip() == READY
    return process, path


def run_in_jailed_kernel(cwd: Path, zygote_socket: str, code: str, stop: str = "shutdown") -> tuple[str, int]:
    """Runs `code` in a kernel of SandboxedKernelManager; its stdout, and the kernel's pid outside (its launcher's)."""
    import asyncio

    from grading.sandbox import SandboxedKernelManager

    async def run() -> tuple[str, int]:
        manager = SandboxedKernelManager(zygote_socket=zygote_socket, memory_limit=3 * 2**30, process_limit=64)
        await manager.start_kernel(cwd=str(cwd))
        client = manager.client()
        client.start_channels()
        output: list[str] = []
        try:
            await client.wait_for_ready(timeout=60)
            await client.execute_interactive(code, timeout=60, output_hook=lambda message: output.append(
                message["content"]["text"] if message["msg_type"] == "stream" and message["content"]["name"] == "stdout" else ""))
        finally:
            client.stop_channels()
            pid = manager.provisioner.process.pid
            if stop == "kill":
                os.kill(pid, signal.SIGKILL)  # as jupyter_client does to a kernel that will not stop
            await manager.shutdown_kernel(now=True)
        return "".join(output), pid

    return asyncio.run(run())


@pytest.mark.parametrize("warm", [False, True], ids=["fresh-kernel", "kernel-from-zygote"])
def test_a_kernel_from_the_zygote_is_jailed_as_a_fresh_one(tmp_path, warm, monkeypatch):
    """The same jail either way: its own user with no capabilities, limits, processes, network, files,
    environment and import path; a kernel from the zygote has torch loaded before its first cell."""
    if os.geteuid() != 0:
        pytest.fail("grading tests run as root (CI does): a kernel from the zygote needs it")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("GRADING_DB_URL", "postgresql://grader:secret@db/course")  # must not reach the kernel
    course = tmp_path / "course"
    (course / "solutions").mkdir(parents=True)
    (course / "solutions" / "answers.txt").write_text("the reference answers")
    cwd = course / "autograded" / "student" / "lab"
    cwd.mkdir(parents=True)
    zygote, socket_path = start_zygote(tmp_path) if warm else (None, "")
    try:
        code = f"SOLUTIONS, COURSE = {str(course / 'solutions' / 'answers.txt')!r}, {str(course)!r}\n" + JAIL_REPORT
        output, _ = run_in_jailed_kernel(cwd, socket_path, code)
    finally:
        if zygote is not None:
            zygote.stdin.close()
            assert zygote.wait(timeout=30) == 0
    report = json.loads(output or "null") or pytest.fail(f"no report from the kernel: {output!r}")
    assert report["uid"] >= 200_000 and report["capabilities"] == "0000000000000000" and report["no_new_privs"] == "1"
    # Under /tmp, as here, bubblewrap makes the folders above the kernel's own root's alone; elsewhere it sees autograded/ only.
    assert report["cwd"] == str(cwd) and report["solutions"] in ("FileNotFoundError", "PermissionError")
    assert report["course"] in (["autograded"], "PermissionError")
    assert report["data_limit"] == 3 * 2**30 and report["process_limit"] == 64
    assert report["network"] != "reached" and "GRADING_DB_URL" not in report["environment"]
    assert len(report["processes"]) <= 4, report["processes"]  # the jail's init, its placeholder or kernel, the kernel
    assert "" in report["path"] and str(ROOT) not in report["path"]
    assert report["torch_loaded"] == warm


def test_killing_a_kernel_from_the_zygote_ends_its_jail(tmp_path, monkeypatch):
    """jupyter_client kills a kernel by its process, which for a kernel from the zygote is the launcher: the
    jail and the kernel in it go too, and the zygote serves the next kernel."""
    if os.geteuid() != 0:
        pytest.fail("grading tests run as root (CI does): a kernel from the zygote needs it")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cwd = tmp_path / "work"
    cwd.mkdir()
    zygote, socket_path = start_zygote(tmp_path)
    try:
        for _ in range(2):
            output, launcher = run_in_jailed_kernel(cwd, socket_path, "print(__import__('os').getuid())", stop="kill")
            assert int(output) >= 200_000
            deadline = time.time() + 10
            while (left := [line for line in sandbox_processes(str(tmp_path)) if not line.startswith(f"{zygote.pid} ")]) and time.time() < deadline:
                time.sleep(0.2)
            assert not left, left
            assert not Path(f"/proc/{launcher}").exists() or "zombie" in Path(f"/proc/{launcher}/status").read_text()
    finally:
        zygote.stdin.close()
        assert zygote.wait(timeout=30) == 0
    assert not outlived(str(tmp_path), patience=10)


def test_warm_kernels_can_be_turned_off(tmp_path, monkeypatch):
    """GRADING_WARM_KERNELS=0 (what the benchmark uses to time the jail alone) starts no zygote."""
    from grading import warm

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("GRADING_WARM_KERNELS", "0")
    assert warm.start_zygote(str(tmp_path), str(tmp_path)) is None
