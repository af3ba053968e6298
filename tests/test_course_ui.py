"""`make course` and `make course-instructor`: a real JupyterLab on loopback, read as each user meets it.

A student's JupyterLab (JUPYTER_CONFIG_PATH=jupyter/student, as `make course` sets it) tells
the browser to leave nbgrader's instructor plugins out and does not serve the formgrader;
nbgrader's Validate button stays. The instructor's JupyterLab has every tool.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT

BIN = Path(sys.executable).parent
INSTRUCTOR_PLUGINS = ("@jupyter/nbgrader:create-assignment", "@jupyter/nbgrader:formgrader",
                      "@jupyter/nbgrader:course-list", "@jupyter/nbgrader:assignment-list", "@jupyter/nbgrader:menu")
STUDENT_PLUGIN = "@jupyter/nbgrader:validate-assignment"
TOKEN = "course-ui-test-token"


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


@contextmanager
def jupyterlab(tmp_path: Path, student: bool, root_dir: Path = ROOT / "labs", user_settings: dict | None = None):
    """A JupyterLab server on a loopback port, started as the Makefile's target does; stopped afterwards.

    `user_settings` maps a settings id ("@jupyterlab/notebook-extension:tracker") to the settings
    a user would have saved for it."""
    port = free_port()
    for plugin, values in (user_settings or {}).items():
        package, name = plugin.split(":")
        path = tmp_path / "user-config" / "lab" / "user-settings" / package / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "user-config"),  # no settings of the machine's user
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    env.pop("JUPYTER_CONFIG_PATH", None)
    env.pop("NBGRADER_EXECUTION", None)  # a student's kernel, not the autograder's
    if student:
        env["JUPYTER_CONFIG_PATH"] = str(ROOT / "jupyter" / "student")
    log = open(tmp_path / f"jupyterlab-{'student' if student else 'instructor'}.log", "w")
    server = subprocess.Popen(
        [str(BIN / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root_dir}"] + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, f"JupyterLab exited: {(tmp_path / log.name).read_text()[-2000:]}"
                assert time.monotonic() < deadline, "JupyterLab did not answer within two minutes"
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"{url}{'&' if '?' in url else '?'}token={TOKEN}", timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def page_config(base: str) -> dict:
    status, page = get(f"{base}/lab")
    assert status == 200
    match = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page, re.S)
    assert match, "JupyterLab's page has no configuration block"
    return json.loads(match.group(1))


@pytest.mark.slow
def test_students_course_hides_the_instructors_tools(tmp_path):
    with jupyterlab(tmp_path, student=True) as base:
        disabled = page_config(base).get("disabledExtensions", [])
        assert set(INSTRUCTOR_PLUGINS) <= set(disabled), f"still enabled for students: {set(INSTRUCTOR_PLUGINS) - set(disabled)}"
        assert STUDENT_PLUGIN not in disabled
        assert get(f"{base}/formgrader")[0] == 404  # not even served
        assert get(f"{base}/api/contents/01_sampling")[0] == 200  # the labs are there


@pytest.mark.slow
def test_instructors_course_keeps_every_tool(tmp_path):
    with jupyterlab(tmp_path, student=False) as base:
        disabled = page_config(base).get("disabledExtensions", [])
        assert not set(INSTRUCTOR_PLUGINS + (STUDENT_PLUGIN,)) & set(disabled)
        assert get(f"{base}/formgrader")[0] == 200


def test_makefile_starts_the_students_course_with_its_settings():
    makefile = (ROOT / "Makefile").read_text()
    course = makefile[makefile.index("\ncourse:"):].split("\n\n")[0]
    assert 'JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter/student"' in course and "jupyter lab labs/" in course
    settings = json.loads((ROOT / "jupyter" / "student" / "labconfig" / "page_config.json").read_text())
    assert set(settings["disabledExtensions"]) == set(INSTRUCTOR_PLUGINS)
