"""The live pages in a real headless Chromium (Debian's, through Debian's chromedriver, as the dashboard's
browser tests) against a real `refreshq web`, a real worker and a slow loopback upstream: sign in with the
form, start a province refresh from the form and watch its bar move to 100 % without a reload, open
another task's page, watch its 34 province bars and the upstream's pacing, cancel it there; screenshots saved
and checked."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from jobs import keys, tokens
from jobs.upstream.serve import RunningUpstream, start_background
from tests.processes.test_api_served import PASSWORD, refreshq_web
from tests.processes.test_dashboard_browser import browser, wait_for
from tests.support.helpers import REPO, wait_until, with_credentials, worker_process

pytestmark = pytest.mark.slow  # real processes over seconds: out of the quick loop

__all__ = ["browser"]  # the module-scoped Chromium of the dashboard's browser tests
# DOCS_SCREENSHOTS=1 also writes the refresh page's screenshot to docs/ (docs/api.md shows it).
DOCS_SCREENSHOT = REPO / "docs" / "refresh-page.png"
UPSTREAM_PASSWORD = "pages-upstream-pw-5521"


@pytest.fixture
def upstream() -> Iterator[RunningUpstream]:
    """Slow enough (25 ms a request, one at a time) that a province takes seconds and its bar moves."""
    running = start_background(scale=20_000, latency_ms=25)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def site(env: dict[str, str], upstream: RunningUpstream) -> Iterator[tuple[str, dict[str, str]]]:
    # Credentials in the URL (this upstream ignores them): they must show on no page.
    environment = {**env, "REFRESHQ_UPSTREAM_URL": with_credentials(upstream.url, "pages", UPSTREAM_PASSWORD),
                   "REFRESHQ_UPSTREAM_CONCURRENCY": "1"}
    with refreshq_web(environment) as url:
        yield url, environment


def upstream_url(site: tuple[str, dict[str, str]]) -> str:
    """The site's upstream URL without its credentials: how a task shows its upstream."""
    return site[1]["REFRESHQ_UPSTREAM_URL"].replace(f"pages:{UPSTREAM_PASSWORD}@", "")


def shot(driver: WebDriver, path: Path) -> Path:
    driver.save_screenshot(str(path))
    assert path.exists() and path.stat().st_size > 10_000, f"screenshot {path} is missing or empty"
    return path


def bar_of(driver: WebDriver, task_id: str) -> tuple[float, str] | None:
    """(bar width in %, status text) of the task's row on /, read in one script (rows are redrawn)."""
    state = driver.execute_script("""
        var row = document.querySelector('tr[data-task="' + arguments[0] + '"]');
        if (!row) return null;
        var fill = row.querySelector('.fill'), bar = fill.parentNode;
        return [100 * fill.getBoundingClientRect().width / bar.getBoundingClientRect().width,
                row.querySelector('.status').textContent.trim()];
    """, task_id)
    return (float(state[0]), str(state[1])) if state else None


def sign_in(driver: WebDriver, url: str) -> None:
    driver.get(f"{url}/")
    WebDriverWait(driver, 20).until(lambda d: "/login" in d.current_url, "the sign-in page")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_for(driver, "return document.body.getAttribute('data-page') === 'index'", "the refresh list")


def test_start_watch_and_cancel_refreshes_in_the_browser(
    browser: WebDriver, site: tuple[str, dict[str, str]], conn: redis.Redis, tmp_path: Path
) -> None:
    url, environment = site
    browser.set_window_size(1280, 1500)
    with worker_process(environment):
        sign_in(browser, url)
        Select(browser.find_element(By.ID, "province")).select_by_visible_text("广东省")
        browser.find_element(By.CSS_SELECTOR, "input[name=kind][value=province]").click()
        browser.find_element(By.ID, "start-refresh").click()
        message = wait_for(browser, "var m = document.getElementById('message');"
                                    "return !m.hidden && m.textContent", "the start message")
        assert message.startswith("started 广东省: task_"), message
        task_id = message.split(": ")[1]
        browser.execute_script("window.__marker = 1")  # gone if the page reloads
        widths: list[float] = []
        deadline = time.monotonic() + 180
        while True:
            state = bar_of(browser, task_id)
            if state is not None:
                if not widths or state[0] != widths[-1]:
                    widths.append(state[0])
                if 0 < state[0] < 100 and not (tmp_path / "index-running.png").exists():
                    shot(browser, tmp_path / "index-running.png")
                if state[1] == "SUCCEEDED" and state[0] >= 99.5:
                    break
            assert time.monotonic() < deadline, f"the bar stopped at {widths[-1:]}"
            time.sleep(0.1)
        assert browser.execute_script("return window.__marker") == 1, "the page was reloaded"
        # Shown part-way, then at 100 % (how many steps between depends on how busy the machine is).
        assert len([w for w in widths if 0 < w < 100]) >= 1, f"the bar did not move: {widths}"
        assert widths == sorted(widths)
        shot(browser, tmp_path / "index-done.png")
        # The row the script drew shows the task's upstream, as the server draws it, without credentials.
        shown = browser.execute_script(
            "return document.querySelector('tr[data-task=\"' + arguments[0] + '\"] .upstream').textContent", task_id)
        assert shown == upstream_url(site) and UPSTREAM_PASSWORD not in browser.page_source

        # Another task, started by an operator's token, cancelled by the admin from its page.
        token = tokens.create(conn, "operator", "operate")[0]
        other = httpx.post(f"{url}/api/v1/refreshes", json={"kind": "full"},
                           headers={"Authorization": f"Bearer {token}"}, timeout=30).json()["task_id"]
        browser.get(f"{url}/refreshes/{other}")
        wait_for(browser, "return document.querySelectorAll('#provinces tbody tr').length === 34", "34 province bars")
        wait_for(browser, "return document.getElementById('live-mode').textContent === 'live (stream)'", "the stream")
        wait_for(browser, "return [].filter.call(document.querySelectorAll('#provinces .outcome'),"
                          " function (c) { return c.textContent === 'published'; }).length >= 2",
                 "two provinces published, live", 120)
        # The upstream's pacing, live: nothing throttled yet, then a rate learned (as a 429 would leave it).
        pacing = "return document.getElementById('task-pacing').textContent"
        wait_for(browser, f"{pacing}.indexOf('learning: nothing throttled yet') === 0", "the pacing shown")
        conn.hset(keys.UPSTREAM_PACE, mapping={"rate": 42.5, "ceiling": 50})
        wait_for(browser, f"return /^[0-9.]+\\/s learned \\(throttled at 50\\/s\\)$/.test({pacing[7:]})",
                 "the learned rate shown, live")
        page = shot(browser, tmp_path / "refresh-page.png")
        if os.environ.get("DOCS_SCREENSHOTS"):
            DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(page, DOCS_SCREENSHOT)
        assert browser.find_element(By.ID, "task-status").text == "RUNNING"
        assert browser.find_element(By.ID, "task-upstream").text == upstream_url(site)
        assert UPSTREAM_PASSWORD not in browser.page_source
        browser.find_element(By.ID, "cancel").click()
        wait_for(browser, "return document.getElementById('task-status').textContent === 'CANCELLED'",
                 "the page to show CANCELLED", 60)
        wait_until(lambda: not browser.find_element(By.ID, "cancel").is_displayed(), 10, what="Cancel to hide")
        assert browser.find_element(By.ID, "resume").is_displayed()
        shot(browser, tmp_path / "refresh-cancelled.png")
    status = httpx.get(f"{url}/api/v1/refreshes/{other}", headers={"Authorization": f"Bearer {token}"}).json()
    assert status["status"] == "CANCELLED" and status["owner"] == "operator"
    assert browser.execute_script("return window.__dialogs") == []
    assert browser.execute_script("return window.__violations") == []
