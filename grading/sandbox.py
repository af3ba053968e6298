"""The jail a grading kernel runs in: bubblewrap around the kernel alone.

nbgrader's own process stays outside: it must read the hidden tests to inject them and write
the gradebook. Only the kernel, which runs student code, is jailed:

- no network (its own network namespace); it talks to nbgrader over Unix sockets (Jupyter's
  `ipc` transport) in a private folder, which cross that boundary where loopback TCP cannot;
- a file system of its own: the system and Python read-only, of the course only its packages,
  weights/ and data/ (read-only), a private /tmp, and a fresh folder of its own mounted where
  nbgrader runs it (autograded/<student>/<lab>/), so neither the sanitized notebook there,
  which holds the hidden tests, nor solutions/, the gradebook, other students' folders,
  .git or grading/ exist for it;
- an unprivileged user of its own (when grading runs as root), a cap on memory (RLIMIT_DATA),
  on processes (RLIMIT_NPROC, per user: hence a user per kernel), on file size, no core dumps;
- its own process namespace, killed whole when the kernel's parent dies (--die-with-parent);
- a new session, so it cannot reach the instructor's terminal, and an environment with nothing
  of the grader's (no database URL, no tokens).

With a zygote (`zygote_socket`, set by grading/warm.py when grading runs as root), bubblewrap builds
the same jail around a placeholder and the kernel is a fork of the zygote that joins it, past its
imports (grading/zygote.py says how).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from traitlets import Integer, Unicode

from grading.executor import course_readable_paths
from grading.kernel_client import PromptKernelManager

GIB = 2**30
JAIL_BUILT = "jail-built"  # what a warm kernel's placeholder says once it runs (grading/zygote_launch.py)
# Environment variables a kernel keeps; everything else (DB URLs, tokens, SSH agents) stays outside.
KEPT_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS", "NBGRADER_EXECUTION", "PYDEVD_DISABLE_FILE_VALIDATION", "JPY_SESSION_NAME")
SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/sys")
# A kernel's user id when grading runs as root: one per grading process, so that RLIMIT_NPROC,
# which counts a user's processes, caps each kernel on its own.
FIRST_SANDBOX_UID = 200_000


def bubblewrap() -> str | None:
    return shutil.which("bwrap")


def sandbox_uid() -> int | None:
    return FIRST_SANDBOX_UID + os.getpid() if os.geteuid() == 0 else None


def matplotlib_font_cache(folder: Path) -> Path | None:
    """matplotlib's list of fonts, built once in `folder` as a kernel would see the fonts; None if it cannot be.

    A kernel's matplotlib keeps the list in its empty /tmp and would rebuild it for every submission
    (about 0.2 s: it runs fc-list and reads every font); given this file, read-only, it only reads it.
    Built with no home folder, as in the sandbox, so it lists no font the kernel cannot open; one per
    machine, since machines grading one course from a shared folder may have different fonts.
    """
    folder = folder / f"{version('matplotlib')}-{platform.node()}"
    built = sorted(folder.glob("fontlist-v*.json"))
    if not built:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as build:
            environment = {"PATH": os.environ.get("PATH", ""), "HOME": build, "MPLCONFIGDIR": build}
            subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], env=environment,
                           capture_output=True, timeout=300, check=False)
            for path in Path(build).glob("fontlist-v*.json"):
                os.replace(path, folder / path.name)  # atomic: two workers building at once both succeed
        built = sorted(folder.glob("fontlist-v*.json"))
    return built[-1] if built else None


def kernel_environment() -> dict[str, str]:
    """A kernel's whole environment: the kept variables of this process, and a home in its private /tmp."""
    kept = {name: os.environ[name] for name in KEPT_ENVIRONMENT if name in os.environ}
    return {**kept, "HOME": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib", "TMPDIR": "/tmp"}


def sandbox_command(command: list[str], *, cwd: str, workdir: str, socket_dir: str, memory_limit: int,
                    process_limit: int, file_size_limit: int, tmp_size: int, font_cache: Path | None = None) -> list[str]:
    """`command` wrapped in bubblewrap, setpriv and prlimit; `workdir` is shown to it as `cwd`."""
    jail = ["bwrap", "--die-with-parent", "--new-session",
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    for folder in SYSTEM_FOLDERS:
        jail += ["--ro-bind-try", folder, folder]
    jail += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(tmp_size), "--tmpfs", "/tmp"]
    # matplotlib's folder (MPLCONFIGDIR below) must be writable, or matplotlib ignores it
    jail += ["--perms", "1777", "--dir", "/tmp/matplotlib"]
    if font_cache is not None:
        jail += ["--ro-bind", str(font_cache), f"/tmp/matplotlib/{font_cache.name}"]
    mounted = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/sys", "/proc", "/dev", "/tmp"]
    python = {sys.base_prefix, sys.prefix, os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    binds = [("--ro-bind", folder, folder) for folder in python if not folder.startswith(tuple(m + "/" for m in mounted))]
    binds += [("--ro-bind", str(path), str(path)) for path in course_readable_paths()]
    binds += [("--bind", socket_dir, socket_dir), ("--bind", workdir, cwd)]
    created = set()
    for kind, source, target in sorted(binds, key=lambda bind: bind[2]):
        # bubblewrap makes missing parents of a mount point readable by root alone: make them 0755 first
        for parent in map(str, reversed(Path(target).parents[:-1])):
            if parent not in created and not any(parent == m or parent.startswith(m + "/") for m in mounted):
                jail += ["--perms", "0755", "--dir", parent]
                created.add(parent)
        jail += [kind, source, target]
        mounted.append(target)
    jail += ["--chdir", cwd, "--clearenv"]
    for name, value in kernel_environment().items():
        jail += ["--setenv", name, value]
    uid = sandbox_uid()
    if uid is not None:
        jail += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--"]
    else:
        # Without root, the kernel runs as the instructor, whose other processes count towards RLIMIT_NPROC too.
        process_limit += len([pid for pid in os.listdir("/proc") if pid.isdigit()])
    jail += ["prlimit", f"--data={memory_limit}", f"--nproc={process_limit}", f"--fsize={file_size_limit}", "--core=0", "--"]
    return jail + command


class SandboxedKernelManager(PromptKernelManager):
    """A kernel manager that starts its kernel inside bubblewrap and talks to it over Unix sockets."""

    memory_limit = Integer(4 * GIB, help="Bytes of data memory a kernel may allocate (RLIMIT_DATA)").tag(config=True)
    process_limit = Integer(128, help="Processes and threads a kernel may run at once (RLIMIT_NPROC)").tag(config=True)
    file_size_limit = Integer(GIB, help="Largest file a kernel may write").tag(config=True)
    tmp_size = Integer(GIB, help="Size of the kernel's private /tmp (it counts as memory)").tag(config=True)
    workdir = Unicode("", help="The kernel's own writable folder, shown at its working directory").tag(config=True)
    font_cache_dir = Unicode("", help="Where matplotlib's font list is built once for every kernel (empty: each builds its own)").tag(config=True)
    zygote_socket = Unicode("", help="A warm kernel process (grading/zygote.py) to fork kernels from (empty: start each kernel afresh)").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._socket_dir = tempfile.mkdtemp(prefix="grading-kernel-")
        self.transport = "ipc"
        self.ip = os.path.join(self._socket_dir, "kernel")
        self.connection_file = os.path.join(self._socket_dir, "connection.json")

    def format_kernel_cmd(self, extra_arguments=None):
        command = super().format_kernel_cmd(extra_arguments)
        # The kernel is in a session of its own, which jupyter_client's SIGINT to the launcher's
        # process group no longer reaches: interrupt it with a message on its control channel instead.
        self.kernel_spec.interrupt_mode = "message"
        cwd = os.path.realpath(self._launch_args.get("cwd") or os.getcwd())
        workdir = self.workdir or tempfile.mkdtemp(prefix="grading-work-")
        prepare_workdir(Path(cwd), Path(workdir))
        uid = sandbox_uid()
        if uid is not None:
            for path in (self._socket_dir, self.connection_file, *all_paths(Path(workdir))):
                os.chown(path, uid, uid)
        font_cache = matplotlib_font_cache(Path(self.font_cache_dir)) if self.font_cache_dir else None
        limits = dict(memory_limit=self.memory_limit, process_limit=self.process_limit, file_size_limit=self.file_size_limit)
        warm = self.zygote_socket and uid is not None and "ipykernel_launcher" in command
        # From the zygote: bubblewrap builds the same jail around a placeholder, and a fork of the
        # zygote, already past its imports, becomes the kernel inside it (grading/zygote.py).
        # The placeholder speaks once it runs, which bubblewrap lets it do only when the jail is complete.
        jailed = ["/bin/sh", "-c", f"echo {JAIL_BUILT}; exec sleep infinity"] if warm else command
        jail = sandbox_command(jailed, cwd=cwd, workdir=workdir, socket_dir=self._socket_dir, tmp_size=self.tmp_size,
                               font_cache=font_cache, **limits)
        if not warm:
            return jail
        request = {"uid": uid, "cwd": cwd, "argv": command[command.index("ipykernel_launcher") + 1:],
                   "env": kernel_environment(), "limits": {"data": self.memory_limit, "nproc": self.process_limit,
                                                           "fsize": self.file_size_limit}}
        launcher = str(Path(__file__).with_name("zygote_launch.py"))
        return [sys.executable, "-I", "-S", launcher, self.zygote_socket, json.dumps(request), *jail]

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    cleanup_resources = _async_cleanup_resources  # AsyncKernelManager binds the name to its parent's method


def prepare_workdir(cwd: Path, workdir: Path) -> None:
    """A fresh `workdir` holding the files nbgrader put in `cwd`, except notebooks (they hold the hidden tests)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    if cwd.is_dir():
        for source in cwd.rglob("*"):
            if source.is_file() and source.suffix != ".ipynb" and ".ipynb_checkpoints" not in source.parts:
                target = workdir / source.relative_to(cwd)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)


def all_paths(folder: Path) -> list[Path]:
    return [folder, *folder.rglob("*")]
