"""optuna-dashboard on a small finished study, driven by headless Chromium (Debian's package).

Marked `browser`: `make test-browser` runs it (CI does, after `apt-get install chromium`).
Set BUDGETNAS_SCREENSHOT=path to keep the screenshot.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from budgetnas.search.engine.train import Engine
from budgetnas.search.study.workers import run
from tests.conftest import cfg

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dashboard(data_root, tmp_path, scripted_search):
    run(cfg(data_root, name="demo-study", trials=3, epochs=2, storage="sqlite:///studies/demo-study.db"), engine=Engine("cpu"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "budgetnas.search.cli", "dashboard", "--study", "demo-study", "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/api/studies", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_dashboard_shows_study_note_and_artifact(dashboard, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(dashboard + "/dashboard")
        page.screenshot(path=str(tmp_path / "list.png"))
        expect(page.get_by_text("demo-study").first).to_be_visible(timeout=20_000)
        page.goto(dashboard + "/dashboard/studies/1/trials")
        expect(page.get_by_text("Target").first).to_be_visible(timeout=20_000)  # the trial's note
        expect(page.get_by_text("Analysis").first).to_be_visible()
        expect(page.get_by_text("trial_0.py").first).to_be_visible()  # an artifact link
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("BUDGETNAS_SCREENSHOT"):
        shutil.copy(shot, Path(os.environ["BUDGETNAS_SCREENSHOT"]))
