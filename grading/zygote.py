"""Warm kernels: torch and the kernel's imports paid once per worker, a fresh sandbox for every kernel.

    python -m grading.zygote --socket PATH --course ROOT    (started by grading.warm when grading runs as root)

A kernel spends about 2 s importing torch, IPython and ipykernel before a lab's first cell does
any work. This process imports them once, with a kernel's environment, and never runs student
code. For each kernel, `grading.sandbox` first starts bubblewrap exactly as it would around a
kernel, but around a placeholder (`sleep`), so that bubblewrap alone builds the jail: its mounts,
/dev, /proc, private /tmp and its own network, IPC, UTS, PID and cgroup namespaces. It then asks
this process for a kernel inside that jail. A fork joins the jail's namespaces with setns(2), as
`nsenter` does, and takes its root; a second fork, which is a process of the jail's PID namespace,
drops to the kernel's user with the same rlimits and no new privileges, closes every descriptor
it inherited, and runs the kernel. Memory is copy-on-write: nothing a kernel does reaches this
process or a later kernel, and everything it started dies with its jail, as before.

Each connection sends one line of JSON, {"sandbox_pid", "uid", "cwd", "argv", "env", "limits"},
and gets back one line, the kernel's exit status, when the kernel has exited; closing the
connection kills the kernel. This process exits when its stdin closes.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import selectors
import signal
import socket
import sys
import traceback

READY = "GRADING-ZYGOTE-READY"
SOCKET_VARIABLE = "GRADING_KERNEL_ZYGOTE"  # names a worker's zygote to its submissions (set by grading/warm.py)
MAX_REQUEST_BYTES = 1 << 16
# setns(2) flags, in the order nsenter joins them: the mount namespace last, since it changes what /proc shows.
NAMESPACES = (("ipc", 0x08000000), ("uts", 0x04000000), ("net", 0x40000000), ("cgroup", 0x02000000),
              ("pid", 0x20000000), ("mnt", 0x00020000))
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38

libc = ctypes.CDLL(None, use_errno=True)


def preload() -> None:
    """What every kernel imports before a lab's first cell can run, and the setup cells' heavy imports."""
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import zmq  # noqa: F401
    import IPython  # noqa: F401
    import ipykernel.ipkernel  # noqa: F401
    import ipykernel.kernelapp  # noqa: F401
    import PIL.Image  # noqa: F401
    import tqdm.auto  # noqa: F401

    import shared.checks, shared.data, shared.device, shared.distillation  # noqa: F401, E401
    import shared.flow, shared.guidance, shared.metrics, shared.model  # noqa: F401, E401
    import shared.plotting, shared.samplers, shared.schedule, shared.weights  # noqa: F401, E401


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def libc_call(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def enter_jail(pid: int) -> None:
    """Join the namespaces of process `pid` (the jail's first process) and take its root."""
    descriptors = [(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), flag, name) for name, flag in NAMESPACES]
    root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for descriptor, flag, name in descriptors:
            libc_call(libc.setns(descriptor, flag), f"setns({name})")
        os.fchdir(root)
        os.chroot(".")
    finally:
        for descriptor, _, _ in descriptors:
            os.close(descriptor)
        os.close(root)


def reseed() -> None:
    """Seeds from the OS what a fresh kernel's imports would have, so that kernels do not share the zygote's."""
    import random

    random.seed()
    if "numpy.random" in sys.modules:
        sys.modules["numpy"].random.seed()


def become_kernel(request: dict, output: list[int]) -> None:
    """In the jail's PID namespace: the kernel's session, limits and user, nothing inherited. Never returns."""
    code = 1
    try:
        os.setsid()
        libc_call(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
        limits = request["limits"]
        for kind, value in ((resource.RLIMIT_DATA, limits["data"]), (resource.RLIMIT_NPROC, limits["nproc"]),
                            (resource.RLIMIT_FSIZE, limits["fsize"]), (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(kind, (int(value), int(value)))
        # Before dropping root, as bubblewrap's --chdir does: bubblewrap may have made the folders above it root's alone.
        os.chdir(request["cwd"])
        uid = request.get("uid")
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)  # from root to another user: every capability is dropped
        libc_call(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
        os.dup2(output[0], 1)  # the launcher's, where a kernel started afresh would write
        os.dup2(output[1], 2)
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        os.environ.clear()
        os.environ.update({str(key): str(value) for key, value in request["env"].items()})
        del sys.path[0]  # this process's own folder; a kernel started afresh has none in its place either
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        reseed()
        from ipykernel import kernelapp

        sys.argv = [os.path.join(os.path.dirname(os.path.dirname(kernelapp.__file__)), "ipykernel_launcher.py"), *request["argv"]]
        kernelapp.launch_new_instance()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def serve_kernel(connection: socket.socket, request: dict, output: list[int]) -> None:
    """In a fork: enter the jail, start the kernel in it, report its exit; kill it if the connection closes. Never returns."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        os.dup2(output[1], 2)  # what goes wrong from here shows where a kernel's errors would
        outside = os.stat("/")
        enter_jail(int(request["sandbox_pid"]))
        inside = os.stat("/")
        if (inside.st_dev, inside.st_ino) == (outside.st_dev, outside.st_ino):
            raise RuntimeError("the jail's root is this machine's root: no kernel runs there")
        kernel = os.fork()
        if kernel == 0:
            connection.close()
            become_kernel(request, output)
        for descriptor in output:
            os.close(descriptor)
        exited = os.pidfd_open(kernel)
        events = selectors.DefaultSelector()
        events.register(connection, selectors.EVENT_READ)
        events.register(exited, selectors.EVENT_READ)
        while True:
            ready = {key.fileobj for key, _ in events.select()}
            if exited in ready:
                status = os.waitpid(kernel, 0)[1]
                connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                code = 0
                break
            if not connection.recv(1):  # the launcher is gone: so is the kernel
                os.kill(kernel, signal.SIGKILL)
                os.waitpid(kernel, 0)
                break
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def read_request(connection: socket.socket) -> tuple[dict, list[int]]:
    """One line of JSON, and any descriptors sent along with it (at most two)."""
    data, descriptors = b"", []
    try:
        while not data.endswith(b"\n"):
            chunk, received, _, _ = socket.recv_fds(connection, 4096, 2)
            descriptors += received
            if not chunk or len(data) > MAX_REQUEST_BYTES:
                raise ValueError("the request was cut short or too long")
            data += chunk
        return json.loads(data), descriptors
    except BaseException:  # whatever fails, the descriptors received so far are closed
        for descriptor in descriptors:
            os.close(descriptor)
        raise


def fork_per_request(socket_path: str, ready: str, check, serve_in_child) -> None:
    """A fork server: listens on `socket_path`, says `ready`, and for each connection reads a request,
    `check(request, descriptors)` (a ValueError is answered as a bad request), then forks a child that runs
    `serve_in_child(connection, request, descriptors)`, which never returns. Returns when stdin closes
    (whoever started this process is gone). Shared by this zygote and the warm grading process."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the system
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(16)
    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ)
    events.register(sys.stdin.buffer, selectors.EVENT_READ)
    print(ready, flush=True)
    while True:
        for key, _ in events.select():
            if key.fileobj is not listener:
                if not sys.stdin.buffer.read1(1):
                    return
                continue
            connection, _ = listener.accept()
            descriptors: list[int] = []
            try:
                request, descriptors = read_request(connection)
                check(request, descriptors)
            except (ValueError, OSError) as error:
                for descriptor in descriptors:
                    os.close(descriptor)
                connection.sendall(f"bad request: {error}\n".encode())
                connection.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                listener.close()
                serve_in_child(connection, request, descriptors)
            connection.close()
            for descriptor in descriptors:
                os.close(descriptor)


def check_kernel_request(request: dict, descriptors: list[int]) -> None:
    missing = {"sandbox_pid", "cwd", "argv", "env", "limits"} - set(request) if isinstance(request, dict) else {"everything"}
    if missing or len(descriptors) != 2:
        raise ValueError(f"the request lacks {sorted(missing) or 'stdout and stderr'}")


def serve(socket_path: str) -> None:
    if os.geteuid() != 0:
        raise RuntimeError("warm kernels need root: joining a jail's mount namespace takes CAP_SYS_ADMIN")
    preload()
    if threads() != 1:  # a fork copies only the forking thread, and with it any lock another thread held
        raise RuntimeError(f"the zygote must be single-threaded after its imports, has {threads()} threads "
                           "(set OMP_NUM_THREADS=1 and OPENBLAS_NUM_THREADS=1)")
    fork_per_request(socket_path, READY, check_kernel_request, serve_kernel)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on, in a folder only root can open")
    parser.add_argument("--course", default="", help="the course it serves (a label, so that its processes can be found)")
    serve(parser.parse_args(argv).socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
