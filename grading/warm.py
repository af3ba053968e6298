"""A warm grading process per Dask worker: nbgrader imported once, one fork per submission.

    python -m grading.warm --socket PATH --course ROOT     (started by `class_grader.grade_one`)

Starting `python -m grading.submission` costs about 1.2 s of imports (nbgrader, nbconvert,
SQLAlchemy, jupyter_client) before any grading, for every submission. This process pays it
once: it imports what a grading run uses, then waits on a Unix socket in a private folder. Each
connection sends one request, `{"argv": [...], "env": {...}}`, and gets a fresh child, forked
from this still single-threaded process, whose stdin, stdout and stderr are the connection. The
child is what `python -m grading.submission --watch-stdin` would be, in a session of its own:
its first line names its process id, its last line is the result, and when the connection
closes (the worker died, or gave up on it) it kills its process group, kernel included.

This process exits when its stdin closes: the worker that started it is gone. Its command line
names the course, so that what runs for a course can be found by it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import traceback

from grading.zygote import READY as ZYGOTE_READY
from grading.zygote import SOCKET_VARIABLE, fork_per_request

PID_PREFIX = "GRADING-PID "
READY = "GRADING-WARM-READY"


def preload() -> None:
    """Import what a grading run imports, so that no child pays for it."""
    import grading.submission  # noqa: F401  (first: it hides rfc3987_syntax from jsonschema)
    import ipykernel.kernelspec  # noqa: F401
    import latex2mathml.converter  # noqa: F401  (nbconvert's markdown filters)
    import nbclient  # noqa: F401
    import nbgrader.api  # noqa: F401
    import nbgrader.apps.autogradeapp  # noqa: F401
    import nbgrader.converters.autograde  # noqa: F401
    import nbgrader.preprocessors  # noqa: F401
    from nbgrader.apps.nbgraderapp import NbGraderApp  # noqa: F401

    import sqlalchemy.dialects.postgresql  # noqa: F401  (the gradebook's two kinds)
    import sqlalchemy.dialects.sqlite  # noqa: F401
    import sqlite3  # noqa: F401

    import grading.executor  # noqa: F401
    import grading.feedback  # noqa: F401
    import grading.sandbox  # noqa: F401


def check_request(request: dict, descriptors: list[int]) -> None:
    """A request is one line of JSON: the submission's command-line arguments and the environment it adds."""
    if (not isinstance(request, dict) or not isinstance(request.get("argv"), list)
            or not isinstance(request.get("env", {}), dict) or descriptors):
        raise ValueError('a request is {"argv": [...], "env": {...}}')


# The worker's zygote (grading/zygote.py), which forks sandboxed kernels past their imports; None if there is none.
ZYGOTE: subprocess.Popen | None = None


def start_zygote(socket_path: str, course: str) -> subprocess.Popen | None:
    """The zygote, started with a kernel's environment, where it can jail kernels: as root, with bubblewrap."""
    from grading.sandbox import bubblewrap, kernel_environment

    # One thread per kernel, as the class grader runs them: with more, numpy's BLAS starts threads at
    # import, and a fork would copy only one of them. GRADING_WARM_KERNELS=0 starts every kernel afresh.
    if os.geteuid() != 0 or bubblewrap() is None or os.environ.get("OMP_NUM_THREADS") != "1":
        return None
    if os.environ.get("GRADING_WARM_KERNELS", "1") == "0":
        return None
    return subprocess.Popen([sys.executable, "-m", "grading.zygote", "--socket", socket_path, "--course", course],
                            env=kernel_environment(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def zygote_ready(process: subprocess.Popen, socket_path: str) -> bool:
    """Waits for the zygote's imports; False, with its reason on stderr, if it could not start."""
    lines = []
    for line in iter(process.stdout.readline, b""):
        if line.decode(errors="replace").strip() == ZYGOTE_READY:
            os.environ[SOCKET_VARIABLE] = socket_path
            return True
        lines.append(line.decode(errors="replace"))
    print("warm kernels are off: the zygote did not start:", "".join(lines)[-2000:], file=sys.stderr, flush=True)
    return False


def grade_in_child(connection: socket.socket, request: dict, descriptors: list[int]) -> None:
    """In the forked child: become `python -m grading.submission --watch-stdin` talking over `connection`. Never returns."""
    code = 1
    try:
        if ZYGOTE is not None:  # only the warm process holds the zygote's pipes: its exit must close them
            os.close(ZYGOTE.stdin.fileno())
            os.close(ZYGOTE.stdout.fileno())
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the parent ignores it; jupyter_client must wait for its kernel
        os.setsid()
        for fd in (0, 1, 2):
            os.dup2(connection.fileno(), fd)
        connection.close()
        os.environ.update({str(key): str(value) for key, value in request.get("env", {}).items()})
        print(f"{PID_PREFIX}{os.getpid()}", flush=True)
        from grading import submission

        code = submission.main([*request["argv"], "--watch-stdin"])
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(socket_path: str, course: str = "") -> None:
    global ZYGOTE
    zygote_socket = os.path.join(os.path.dirname(socket_path), "zygote")
    ZYGOTE = start_zygote(zygote_socket, course)  # it imports while this process does
    preload()
    if ZYGOTE is not None and not zygote_ready(ZYGOTE, zygote_socket):
        ZYGOTE = None
    if threading.active_count() != 1:  # forking a process with other threads can copy a held lock
        raise RuntimeError(f"the warm grading process must be single-threaded, has {threading.active_count()} threads")
    fork_per_request(socket_path, READY, check_request, grade_in_child)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on, in a folder only this user can open")
    parser.add_argument("--course", required=True, help="the course it grades (a label, so that its processes can be found)")
    args = parser.parse_args(argv)
    serve(args.socket, args.course)
    return 0


if __name__ == "__main__":
    sys.exit(main())
