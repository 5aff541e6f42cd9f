"""A real browser: JupyterLab on localhost, the hyperparameter panel in headless Chromium, its Train button.

Debian's chromium (`apt-get install chromium`) driven by Playwright, which downloads no browser of its
own. Opens a two-cell notebook that shows notebook 02's panel (`hyperparameter_panel` on the shipped
`dates_smoke` config, a few steps), runs it, clicks Train, and checks that the live loss plot (an
ipywidgets.Image) is redrawn while training runs. Notebook 02 itself runs in tests/test_course_from_wheel.py. Takes a screenshot into the test's temporary
folder; FTLAB_REFRESH_SCREENSHOT=1 writes it over the one the README shows (docs/images/), which is
tracked, so an ordinary run leaves the checkout clean.
Skipped where chromium, Playwright or JupyterLab is missing.
"""

import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "images" / "jupyterlab_02_lora.png"  # the README image
NOTEBOOK = "panel.ipynb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install chromium"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="pip install playwright"),
    pytest.mark.skipif(importlib.util.find_spec("jupyterlab") is None, reason="pip install jupyterlab"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    course = tmp_path / "course"  # a copy: JupyterLab autosaves outputs into the notebook it runs
    course.mkdir()
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(
            "from IPython.display import display\n\nfrom ftlab.config import load_config\n"
            "from ftlab.panels import hyperparameter_panel\n\n"
            "cfg = load_config('dates_smoke', ['max_steps=6', 'eval_file=null', 'test_limit=4', 'max_length=128',\n"
            "                                  'output_dir=runs/browser'])\n"
            "panel = hyperparameter_panel(cfg)\ndisplay(panel)"),
        nbformat.v4.new_code_cell("print('panel shown')")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, course / NOTEBOOK)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)  # no "get notified about Jupyter news?" toast over the screenshot
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = {**os.environ, "FTLAB_PROFILE": "small", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter"), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={course}", "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "jupyterlab.log", "w"))  # noqa: SIM115
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start: " + (tmp_path / "jupyterlab.log").read_text()[-2000:])
    yield base, token
    server.terminate()
    server.wait(timeout=30)


def kernel_ready(base: str, token: str, timeout: float = 120) -> None:
    """Wait until the notebook's kernel is started, connected to the page, and idle.

    Cells queued by Run All before the page's kernel connection was up stayed queued for good."""
    deadline, kernels = time.time() + timeout, []
    while time.time() < deadline:
        kernels = json.load(urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=5))
        if kernels and kernels[0]["execution_state"] == "idle" and kernels[0]["connections"] >= 1:
            return
        time.sleep(0.5)
    pytest.fail(f"the notebook's kernel was not ready within {timeout:.0f} s: {kernels}")


def test_panel_trains_and_the_live_plot_changes_in_chromium(jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright

    base, token = jupyterlab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)  # the notebook is open
        kernel_ready(base, token)
        page.wait_for_selector("[data-status='idle']", timeout=60_000)  # and the page's kernel status says so
        page.locator(".lm-MenuBar-itemLabel").get_by_text("Run", exact=True).click()
        page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
        outputs = page.locator(".jp-OutputArea-output")  # cell outputs, not the code that prints them
        outputs.get_by_text("panel shown").wait_for(timeout=5 * 60_000)  # both cells ran

        train = page.get_by_role("button", name="Train")
        plot = page.locator(".widget-image").first  # the panel's live loss plot
        plot.scroll_into_view_if_needed()
        before = plot.get_attribute("src")  # the empty plot, before any step
        train.click()
        seen, deadline = {before}, time.time() + 15 * 60
        while time.time() < deadline and len(seen) < 3:  # redrawn at least twice while the button's run trains
            seen.add(plot.get_attribute("src"))
            time.sleep(0.5)
        assert len(seen) >= 3, "the live plot did not change while training"
        outputs.get_by_text("panel: trained").first.wait_for(timeout=15 * 60_000)  # the button's run finished
        plot.scroll_into_view_if_needed()
        shot = SCREENSHOT if os.environ.get("FTLAB_REFRESH_SCREENSHOT") == "1" else tmp_path / SCREENSHOT.name
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
        browser.close()
    assert shot.read_bytes()[:4] == b"\x89PNG", shot
