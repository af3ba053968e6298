"""The kernel command when kernels come from the zygote (grading/zygote.py); standard library only.

    python -I -S zygote_launch.py SOCKET REQUEST_JSON bwrap [bubblewrap's arguments...] PLACEHOLDER...

Starts bubblewrap around the placeholder, learns the jail's first process from bubblewrap's
--info-fd, waits for the placeholder to say that it runs (so that the jail is complete), asks the
zygote for a kernel in that jail, and lives as long as the kernel does, so that
jupyter_client's process for the kernel is this one: killing it kills bubblewrap
(--die-with-parent), which ends the jail and the kernel with it.
"""

import json
import os
import socket
import subprocess
import sys

JAIL_BUILT = "jail-built"  # grading.sandbox.JAIL_BUILT: this file imports nothing of the course


def main() -> int:
    socket_path, request, jail = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
    read_end, write_end = os.pipe()
    bubblewrap = subprocess.Popen([jail[0], "--info-fd", str(write_end), *jail[1:]], pass_fds=(write_end,),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    os.close(write_end)
    info, pid = b"", None
    while pid is None:  # bubblewrap writes one JSON object, {"child-pid": N, ...}
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        info += chunk
        try:
            pid = json.loads(info)["child-pid"]
        except (ValueError, KeyError):
            continue
    os.close(read_end)
    # bubblewrap names the jail's first process as soon as it exists, before it has built the jail
    # (mounts, new root, /proc): join it only once the placeholder runs, which it does in the finished jail.
    if pid is not None and bubblewrap.stdout.readline().decode().strip() != JAIL_BUILT:
        pid = None
    if pid is None:
        bubblewrap.kill()
        print(f"bubblewrap did not start the jail (exit {bubblewrap.wait()})", file=sys.stderr)
        return 1
    request["sandbox_pid"] = pid
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(socket_path)
    # With it, this process's stdout and stderr, which become the kernel's, as for a kernel started afresh.
    socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], [1, 2])
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = connection.recv(64)
        if not chunk:
            break
        reply += chunk
    bubblewrap.kill()
    bubblewrap.wait()
    try:
        return int(reply)
    except ValueError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
