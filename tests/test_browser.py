"""The labs as a student meets them: headless Chromium drives the student's JupyterLab.

One JupyterLab (the student's settings of `make course`) serves copies of the solution
notebooks from a temporary folder, on a loopback port with a token. For each lab the browser
opens the notebook, runs its cells through the Run menu, saves it, and the test reads it back:
no cell may end in an error. Lab 1 runs whole; the others run up to and including their last
widget (or their first graded check where they have none), which keeps CI's time in bounds while
every widget is exercised. Each widget must render, and moving its first slider one step must
change its picture; the time that takes is recorded. Screenshots stay in the test's temporary
folder (`pytest --basetemp=DIR` keeps them where you want them).

Chromium is Debian's (`apt-get install chromium`, which `make test` does as root); Playwright
drives it and downloads nothing.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request

import pytest
from conftest import LABS, ROOT, TIMINGS, grade_id
from test_course_ui import TOKEN, jupyterlab

RUN_WHOLE = {"01_sampling"}
CELL_TIMEOUT_MS = 600_000  # a whole lab on two cores takes one to two minutes; this is only a backstop
WIDGET_TIMEOUT_MS = 30_000
# JupyterLab 4 draws only the cells in view ("windowing"); a student's setting that draws all of them
# lets the test read every cell's output from the page.
SETTINGS = {"@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"}}
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook in view, not one left open in another tab
CELLS = f"{PANEL} .jp-Notebook .jp-Cell"


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("the browser test needs Debian's Chromium: run  sudo apt-get install -y chromium  (make test does it as root)")
    return path


def widget_cells(notebook: dict) -> list[int]:
    return [i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code" and "widgets." in "".join(cell["source"])]


def cells_to_run(lab: str, notebook: dict) -> int:
    """How many cells, from the top, the browser runs."""
    cells = notebook["cells"]
    if lab in RUN_WHOLE:
        return len(cells)
    widgets = widget_cells(notebook)
    if widgets:
        return widgets[-1] + 1
    first_check = next(i for i, cell in enumerate(cells) if cell.get("metadata", {}).get("nbgrader", {}).get("grade") and cell["cell_type"] == "code")
    return first_check + 1


def api(base: str, path: str, method: str = "GET"):
    request = urllib.request.Request(f"{base}/api/{path}?token={TOKEN}", method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def browser_course(tmp_path_factory):
    """The student's JupyterLab over copies of the solutions, and a headless Chromium."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    tmp = tmp_path_factory.mktemp("browser")
    course = tmp / "course"
    for lab in LABS:
        (course / lab).mkdir(parents=True)
        shutil.copy(ROOT / "solutions" / lab / f"{lab}.ipynb", course / lab)
    screenshots = tmp / "screenshots"
    screenshots.mkdir()
    with jupyterlab(tmp, student=True, root_dir=course, user_settings=SETTINGS) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            yield base, browser, course, screenshots
        finally:
            browser.close()


def run_cells(page, count: int, total: int) -> None:
    """Run the first `count` cells with the Run menu, as a student would, and see that they start."""
    # A click in the notebook first: the Run menu acts on the notebook that has focus, and right after
    # JupyterLab loads that may still be none (a menu item clicked then runs nothing).
    if count < total:  # select the first cell not to run, then "Run All Above Selected Cell"
        page.locator(CELLS).nth(count).locator(".jp-InputPrompt").click()
        label = "Run All Above Selected Cell"
    else:
        page.locator(CELLS).first.locator(".jp-InputPrompt").click()
        label = "Run All Cells"
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text=label).first.click()
    first_prompt = f"{PANEL} .jp-CodeCell .jp-InputPrompt"  # "[ ]:" until it runs, then "[*]:", then "[1]:"
    page.wait_for_function(f"() => /\\[(\\*|\\d+)\\]/.test(document.querySelector('{first_prompt}')?.textContent ?? '')",
                           timeout=WIDGET_TIMEOUT_MS, polling=200)


def wait_until_idle(page) -> None:
    page.wait_for_timeout(1000)
    page.wait_for_function(
        f"() => ![...document.querySelectorAll('{PANEL} .jp-InputPrompt')].some(e => e.textContent.includes('*'))"
        f" && document.querySelector('{PANEL} .jp-Notebook-ExecutionIndicator')?.dataset.status === 'idle'",
        timeout=CELL_TIMEOUT_MS, polling=500)


def picture(cell) -> str | None:
    images = cell.locator(".jp-OutputArea-output img")
    return images.last.get_attribute("src") if images.count() else None


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS)
def test_lab_runs_in_the_students_jupyterlab(browser_course, lab):
    base, browser, course, screenshots = browser_course
    path = f"{lab}/{lab}.ipynb"
    notebook = json.loads((course / path).read_text())
    count, total = cells_to_run(lab, notebook), len(notebook["cells"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{base}/lab/workspaces/{lab}/tree/{path}?token={TOKEN}")  # a workspace of its own: no other lab open
        page.wait_for_selector(CELLS)
        page.wait_for_selector(f"{PANEL} .jp-Notebook-ExecutionIndicator[data-status='idle']")
        assert page.locator(CELLS).count() == total
        assert page.locator(PANEL).get_by_text("Validate", exact=True).count() >= 1, "the student's Validate button is missing"
        start = time.perf_counter()
        run_cells(page, count, total)
        wait_until_idle(page)
        TIMINGS[f"{lab}: {count} of {total} cells in Chromium"] = time.perf_counter() - start
        page.screenshot(path=str(screenshots / f"{lab}.png"), full_page=True)

        for index in widget_cells(notebook):
            cell = page.locator(CELLS).nth(index)
            cell.scroll_into_view_if_needed()
            assert cell.locator(".widget-slider").count() >= 1, f"cell {index}: the widget did not render"
            assert "Error displaying widget" not in cell.inner_text()
            before = picture(cell)
            assert before, f"cell {index}: the widget shows no picture"
            cell.screenshot(path=str(screenshots / f"{lab}-cell{index}-before.png"))
            handle = cell.locator(".widget-slider .noUi-handle").first
            handle.focus()
            moved = time.perf_counter()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(
                "([img, old]) => img.isConnected ? img.src !== old : true",
                arg=[cell.locator(".jp-OutputArea-output img").last.element_handle(), before], timeout=WIDGET_TIMEOUT_MS, polling=50)
            page.wait_for_function("(c) => c.querySelector('.jp-OutputArea-output img') !== null",
                                   arg=cell.element_handle(), timeout=WIDGET_TIMEOUT_MS, polling=50)
            TIMINGS[f"{lab}: widget in cell {index}, one slider step"] = time.perf_counter() - moved
            after = picture(cell)
            assert after and after != before, f"cell {index}: moving the slider did not change the picture"
            cell.screenshot(path=str(screenshots / f"{lab}-cell{index}-after.png"))

        saved = api(base, f"contents/{path}")["last_modified"]
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 60
        while api(base, f"contents/{path}")["last_modified"] == saved:
            assert time.monotonic() < deadline, "the notebook was not saved"
            time.sleep(0.5)
        ran = api(base, f"contents/{path}")["content"]["cells"][:count]
        errors = [f"cell {i} ({grade_id(c) or 'no id'}): {o['ename']}: {o['evalue']}"
                  for i, c in enumerate(ran) if c["cell_type"] == "code" for o in c["outputs"] if o["output_type"] == "error"]
        assert not errors, "cells ended in an error in the browser:\n" + "\n".join(errors)
        not_run = [i for i, c in enumerate(ran) if c["cell_type"] == "code" and c["execution_count"] is None]
        assert not not_run, f"cells {not_run} did not run"
    finally:
        for session in api(base, "sessions"):
            if session["path"].endswith(path):
                api(base, f"sessions/{session['id']}", method="DELETE")
        page.close()
