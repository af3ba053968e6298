"""Runs inside the grading kernel: fingerprints what the hidden checks rely on.

This file is never imported from disk by the kernel (the sandbox hides grading/): the
executor sends its text, followed by one call of `_grading_probe(settings)`, as a cell
of its own. The first call (mode "baseline") runs before any student cell: it imports
the watched modules and installs an audit hook, which Python cannot remove again, that
records what a student cell tries (opening files outside its folder, sockets, processes,
signals, ctypes). Every call prints one line, `GRADING-<token>-<nonce> <json>`, that the
executor compares with the baseline outside the kernel, where student code cannot reach.
"""


def _grading_probe(settings):
    import hashlib
    import importlib
    import inspect
    import json
    import os
    import pkgutil
    import signal
    import sys
    import threading
    import types

    token = settings["token"]
    drain_event = "grading." + token

    if settings["mode"] == "baseline":
        for name in settings["preload"] + settings["modules"] + [path.rsplit(".", 1)[0] for path in settings["classes"]]:
            try:
                importlib.import_module(name)
            except Exception:
                pass
        for package in settings["packages"]:
            try:
                root = importlib.import_module(package)
            except Exception:
                continue
            for info in pkgutil.walk_packages(getattr(root, "__path__", []), package + "."):
                try:
                    importlib.import_module(info.name)
                except Exception:
                    pass
        _install_audit_hook(drain_event, tuple(settings["readable"]), settings["course_root"], tuple(settings["course_readable"]))

    def mark(value):
        """Identity of a value; a function's code too, since `f.__code__ = g.__code__` keeps `id(f)`."""
        text = "%x" % id(value)
        if isinstance(value, types.FunctionType):
            text += "/%x/%x" % (id(value.__code__), id(value.__defaults__))
        try:  # an inference-mode tensor has no version counter, and says so with a RuntimeError
            version = getattr(value, "_version", None) if type(value).__module__.startswith("torch") else None
        except RuntimeError:
            version = None
        if isinstance(version, int):  # a tensor changed in place keeps its id but not its version
            text += "/v%d" % version
        return text

    watched, kept = {}, []

    def watch(key, value):
        watched[key] = mark(value)
        kept.append(value)

    if settings["mode"] in ("baseline", "full"):
        for name in settings["modules"]:
            module = sys.modules.get(name)
            watch("sys.modules[%r]" % name, module)
            if module is None:
                continue
            for attribute, value in list(vars(module).items()):
                public = not attribute.startswith("_") or (name == "builtins" and attribute in settings["private_builtins"])
                public = public and not (name == "builtins" and attribute in settings["per_request_builtins"])
                if public and (callable(value) or isinstance(value, types.ModuleType)):
                    watch("%s.%s" % (name, attribute), value)
        classes = []
        for path in settings["classes"]:
            module_name, class_name = path.rsplit(".", 1)
            cls = getattr(sys.modules.get(module_name), class_name, None)
            if isinstance(cls, type):
                classes.append((path, cls))
        for name, module in list(sys.modules.items()):
            if module is None or name.split(".")[0] not in settings["packages"]:
                continue
            watch("sys.modules[%r]" % name, module)
            for attribute, value in list(vars(module).items()):
                if attribute.startswith("_"):
                    continue
                watch("%s.%s" % (name, attribute), value)
                if isinstance(value, type) and getattr(value, "__module__", "") == name:
                    classes.append(("%s.%s" % (name, attribute), value))
        for path, cls in classes:
            for attribute in dir(cls):
                if attribute.startswith("_") and not (attribute.startswith("__") and attribute.endswith("__")):
                    continue
                try:
                    watch("%s.%s" % (path, attribute), inspect.getattr_static(cls, attribute))
                except AttributeError:
                    watched["%s.%s" % (path, attribute)] = "missing"

        shell = get_ipython()  # noqa: F821 (the kernel's own)
        for method in settings["shell_methods"]:
            try:
                watch("IPython shell.%s" % method, inspect.getattr_static(shell, method))
            except AttributeError:
                pass
        kernel = getattr(shell, "kernel", None)
        for method in settings["kernel_methods"]:
            try:
                watch("IPython kernel.%s" % method, inspect.getattr_static(kernel, method))
            except AttributeError:
                pass
        for event, callbacks in shell.events.callbacks.items():
            watched["IPython event hooks (%s)" % event] = ",".join(mark(callback) for callback in callbacks)
        for name in ("ast_transformers", "input_transformers_cleanup", "input_transformers_post"):
            watched["IPython %s" % name] = ",".join(mark(item) for item in getattr(shell, name, []))
        manager = getattr(shell, "input_transformer_manager", None)
        for name in ("cleanup_transforms", "line_transforms", "token_transformers"):
            watched["IPython input_transformer_manager.%s" % name] = ",".join(mark(item) for item in getattr(manager, name, []))
        watched["sys.settrace"] = mark(sys.gettrace())
        watched["sys.setprofile"] = mark(sys.getprofile())
        watched["threading.settrace"] = mark(getattr(threading, "_trace_hook", None))
        for name in ("SIGALRM", "SIGVTALRM", "SIGPROF", "SIGUSR1", "SIGUSR2"):
            watched["signal handler %s" % name] = mark(signal.getsignal(getattr(signal, name)))
        watched["interval timer"] = "armed" if any(signal.getitimer(which)[0] > 0 for which in (
            signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)) else "off"

    # The names the notebook itself has bound: a trusted cell's `reference = ...` must still hold its value
    # when the check that uses it runs.
    namespace = {}
    for name, value in list(get_ipython().user_ns.items()):  # noqa: F821
        if not name.startswith("_"):
            namespace[name] = mark(value)
            if callable(value) or isinstance(value, (types.ModuleType, type)):
                kept.append(value)

    library_threads = tuple(settings["library_threads"])
    threads = sorted("%s (%x)" % (thread.name, thread.ident) for thread in threading.enumerate()
                     if not thread.name.startswith(library_threads))

    events = []
    sys.audit(drain_event, events, kept)  # returns what the hook recorded since the last call; keeps `kept` alive
    # The fingerprints (about 5,000, 250 KB) travel whole only when they differ from the baseline's digest.
    digest = hashlib.sha256(json.dumps(watched, sort_keys=True).encode()).hexdigest() if watched else ""
    if digest and digest == settings.get("expected_digest"):
        watched = None
    print("GRADING-%s-%s %s" % (token, settings["nonce"], json.dumps({
        "watched": watched, "digest": digest, "namespace": namespace, "events": events, "threads": threads, "cwd": os.getcwd()})))


def _install_audit_hook(drain_event, readable, course_root, course_readable):
    """Records attempts to leave the sandbox; the kept objects stop their ids being reused."""
    import os
    import sys

    recorded, kept = [], {}
    own = (os.getcwd() + os.sep,)  # its own folder, as it was before any student cell
    course_readable = course_readable + own
    process_events = {"os.fork", "os.forkpty", "os.system", "os.posix_spawn", "os.exec", "os.spawn",
                      "subprocess.Popen", "pty.spawn"}
    network_events = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo"}
    signal_events = {"os.kill", "os.killpg", "signal.pthread_kill"}

    def note(text):
        if len(recorded) < 50 and text not in recorded:
            recorded.append(text)

    def hook(event, args):
        try:
            if event == drain_event:
                args[0].extend(recorded)
                recorded.clear()
                kept.update((id(value), value) for value in args[1])
            elif event == "open":
                path = args[0]
                if isinstance(path, int):
                    return
                path = os.path.abspath(os.fsdecode(path))
                inside_course = path.startswith(course_root) and not path.startswith(course_readable)
                if inside_course or not path.startswith(readable + own):
                    note("opened a file outside its folder: %s" % path)
            elif event in network_events:
                note("used the network: %s %r" % (event, args[1:2]))
            elif event in process_events:
                note("started a process (%s)" % event)
            elif event in signal_events:
                if not (event == "os.kill" and args[0] == os.getpid()):  # ipykernel interrupts itself so
                    note("sent a signal (%s)" % event)
            elif event.startswith("ctypes."):
                note("used ctypes (%s)" % event)
            elif event in ("sys.addaudithook", "sys.settrace", "sys.setprofile"):
                note("called %s" % event)
        except Exception:
            pass  # an audit hook that raises would abort the operation it watches

    sys.addaudithook(hook)
