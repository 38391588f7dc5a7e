"""The dashboard in a real headless Chromium (Debian's, driven by Selenium through Debian's chromedriver):
markup in names shows as text while workers are busy, the Content-Security-Policy stops markup that
got into a page anyway, the Requeue button works and writes no pickle, and another site's pages
cannot change anything even with the browser holding the password."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import redis
from flask import Response, request
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from jobs import queues
from jobs.config import Settings
from jobs.refresh.job import PROVINCE_FUNC
from jobs.refresh.manager import SyncTaskManager
from tests.support.helpers import drain, http_server, wait_until, worker_process
from tests.support.web_helpers import (
    MARKUP_CODE,
    MARKUP_NAME,
    busy_province_jobs,
    failed_job,
    markup_upstream,
    pickled_values,
    served,
)
from web.app import create_app

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
PASSWORD = "pw"
# Runs before any script of every page: records dialogs instead of opening them, and CSP violations.
WATCH = """
window.__dialogs = [];
['alert', 'confirm', 'prompt', 'print'].forEach(function (name) {
  window[name] = function () { window.__dialogs.push(name + ': ' + Array.from(arguments).join(' ')); };
});
window.__violations = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__violations.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH})
    driver.execute_cdp_cmd("Network.enable", {})
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def logged_in(driver: WebDriver) -> Iterator[None]:
    """The browser sends the dashboard password with every request (as once it has been typed in)."""
    token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    try:
        yield
    finally:
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})


@pytest.fixture
def base_url(env: dict[str, str], redis_url: str) -> Iterator[str]:
    settings = Settings.from_env({**env, "REFRESHQ_WEB_PASSWORD": PASSWORD})
    with served(create_app(settings, redis_url)) as url:
        yield url


def wait_for(driver: WebDriver, script: str, what: str, timeout: float = 20) -> Any:
    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script), what)


def read(driver: WebDriver, selector: str, what: str, ready: str | None = None) -> dict[str, str]:
    """Text, title and first link of the element at `selector` once it (or `ready`) is on the page, read
    in one script: the pages re-render their tables every few seconds, so element handles go stale."""
    script = """
        var ready = document.querySelector(arguments[1]), node = document.querySelector(arguments[0]);
        if (!ready || !node) return null;
        var link = node.querySelector('a');
        return {text: node.textContent.replace(/\\s+/g, ' ').trim(), title: node.title || '',
                link: link ? link.href : ''};
    """
    return WebDriverWait(driver, 20).until(  # type: ignore[no-any-return]
        lambda d: d.execute_script(script, selector, ready or selector), what)


def assert_nothing_ran(driver: WebDriver) -> None:
    """No dialog, no <img> or event-handler attribute made from data, and the page's own scripts ran
    without a CSP violation."""
    assert driver.execute_script("return window.__dialogs") == []
    assert driver.execute_script("return document.images.length") == 0
    assert driver.execute_script("return document.querySelectorAll('[onerror]').length") == 0
    assert driver.execute_script("return window.__violations") == []


@pytest.mark.slow
def test_markup_in_names_shows_as_text_while_a_worker_is_busy(
    browser: WebDriver, base_url: str, env: dict[str, str], conn: redis.Redis
) -> None:
    failed = failed_job(conn, func="tests.support.job_functions.fail_with", args=(MARKUP_NAME,))
    with markup_upstream(200) as (running, _directory), worker_process(env), logged_in(browser):
        manager = SyncTaskManager(Settings.from_env(env), conn, upstream={"kind": "http", "url": running.url})
        task_id = manager.create_province_refresh_task(MARKUP_CODE)
        (busy,) = busy_province_jobs(conn, 1)
        description = f"refresh {task_id}: {MARKUP_NAME}"

        browser.get(f"{base_url}/rq/0/view/workers")
        cell = read(browser, "#workers td[title*='Job ID']", "a busy worker")
        assert f"Description:  {description} " in cell["title"]
        assert cell["text"] == f"{PROVINCE_FUNC}('{task_id}', '{MARKUP_CODE}')"
        assert cell["link"].endswith(f"/rq/0/view/job/{busy}")
        assert_nothing_ran(browser)

        browser.get(f"{base_url}/rq/0/view/job/{busy}")
        assert read(browser, "#job-data .description-scroll", "the job's details")["text"] == description
        assert_nothing_ran(browser)

        browser.get(f"{base_url}/rq/0/view/jobs/{queues.REFRESH}/started/8/asc/1")
        assert read(browser, "#jobs tr[data-role=job] .description", "the started job")["text"] == description
        assert_nothing_ran(browser)

        browser.get(f"{base_url}/rq/0/view/job/{failed.id}")
        details = read(browser, "#job-data", "the failed job's details", ready="#job-data pre.exc_info")
        assert f"refresh test: {MARKUP_NAME}" in details["text"]
        assert '"region": "<img src=x onerror=alert(1)>' in details["text"]  # the metadata, as JSON text
        assert f"ValidationError: {MARKUP_NAME}" in details["text"]  # the traceback
        assert_nothing_ran(browser)

        browser.get(f"{base_url}/rq/0/view/jobs/{queues.NORMAL}/failed/8/asc/1")
        row = read(browser, "#jobs tr[data-role=job]", "the failed job")
        assert f"refresh test: {MARKUP_NAME}" in row["text"] and f"ValidationError: {MARKUP_NAME}" in row["text"]
        assert_nothing_ran(browser)

        browser.get(f"{base_url}/rq/")
        wait_for(browser, "return document.querySelectorAll('#queues tr[data-role=queue]').length >= 5", "queues")
        assert_nothing_ran(browser)


def test_the_policy_stops_markup_that_reached_a_page_anyway(browser: WebDriver, base_url: str) -> None:
    with logged_in(browser):
        browser.get(f"{base_url}/rq/")
        wait_for(browser, "return document.querySelectorAll('#queues tr[data-role=queue]').length", "queues")
        browser.execute_script("""
            var box = document.createElement('div');
            box.innerHTML = '<img src="x" onerror="window.__pwned = 1">';
            document.body.appendChild(box);
            var script = document.createElement('script');
            script.textContent = 'window.__pwned = 2';
            document.body.appendChild(script);
        """)
        violations = wait_for(browser, "var v = window.__violations; return v.length >= 2 && v", "two violations")
    assert {v.split()[0] for v in violations} == {"script-src-attr", "script-src-elem"}
    assert browser.execute_script("return window.__pwned") is None


def test_the_requeue_button_requeues_as_json(browser: WebDriver, base_url: str, conn: redis.Redis) -> None:
    job = failed_job(conn)
    with logged_in(browser):
        browser.get(f"{base_url}/rq/0/view/job/{job.id}")
        button = wait_for(browser, "var b = document.getElementById('requeue-job-btn');"
                                   "return b.offsetParent !== null && b", "the Requeue button")
        button.click()
        wait_until(lambda: job.get_status(refresh=True) == JobStatus.QUEUED, 20, what="the job to be requeued")
        assert_nothing_ran(browser)
    assert pickled_values(conn) == []
    conn.set("test:flaky-ok", "1")
    drain(conn, [queues.NORMAL])
    done = Job.fetch(job.id, connection=conn, serializer=JSONSerializer)
    assert done.get_status() == JobStatus.FINISHED and done.meta == {"region": MARKUP_NAME, "attempt": 1}
    assert pickled_values(conn) == []


class _AttackerPage(BaseHTTPRequestHandler):
    html = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced."""

    def do_GET(self) -> None:
        body = self.server.html.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def attacker_site(html: str) -> Iterator[str]:
    """Another site (localhost, not 127.0.0.1: another origin and another site) serving `html`."""
    with http_server(_AttackerPage) as server:
        server.html = html  # type: ignore[attr-defined]
        yield f"http://localhost:{server.server_address[1]}/"


def test_another_sites_pages_change_nothing(
    browser: WebDriver, env: dict[str, str], redis_url: str, conn: redis.Redis
) -> None:
    job = failed_job(conn)
    other = queues.queue(conn, queues.LOW).enqueue("tests.support.job_functions.add", 1, 1)
    app = create_app(Settings.from_env({**env, "REFRESHQ_WEB_PASSWORD": PASSWORD}), redis_url)
    answered: list[tuple[str, str, int]] = []

    @app.after_request
    def record(response: Response) -> Response:
        if request.path.startswith("/rq/"):  # not the favicon the browser asks for on its own
            answered.append((request.method, request.path, response.status_code))
        return response

    before = (FailedJobRegistry(queues.NORMAL, connection=conn).get_job_ids(), queues.queue(conn, queues.LOW).count)
    with served(app) as base_url, attacker_site(_attack(base_url, job.id)) as url, logged_in(browser):
        browser.get(url)
        # The form's answer replaces the attacker's page: the dashboard refused it.
        wait_for(browser, f"return location.href.startsWith({base_url!r})", "the form's answer")
        assert "refused" in browser.find_element(By.TAG_NAME, "body").text
    assert answered == [  # every forged request reached the dashboard, and was turned away
        ("GET", f"/rq/requeue/{queues.NORMAL}", 405),
        ("POST", f"/rq/job/{job.id}/delete", 403),
        ("POST", f"/rq/job/{job.id}/requeue", 403),
        ("POST", f"/rq/queue/{queues.LOW}/queued/empty", 403),
    ]
    after = (FailedJobRegistry(queues.NORMAL, connection=conn).get_job_ids(), queues.queue(conn, queues.LOW).count)
    assert after == before == ([job.id], 1)
    assert job.get_status(refresh=True) == JobStatus.FAILED and Job.exists(other.id, connection=conn)


def _attack(base_url: str, job_id: str) -> str:
    """A page that, one after the other, GETs requeue-all as an image, POSTs delete and requeue with
    fetch, then submits a form that empties a queue."""
    return f"""<!doctype html><body>
      <form id="f" method="POST" action="{base_url}/rq/queue/{queues.LOW}/queued/empty"></form>
      <script>
        var post = {{method: "POST", mode: "no-cors", credentials: "include"}};
        new Promise(function (done) {{
          var image = new Image();
          image.onload = image.onerror = done;
          image.src = "{base_url}/rq/requeue/{queues.NORMAL}";
        }})
          .then(function () {{ return fetch("{base_url}/rq/job/{job_id}/delete", post); }})
          .then(function () {{ return fetch("{base_url}/rq/job/{job_id}/requeue", post); }})
          .then(function () {{ document.getElementById("f").submit(); }});
      </script></body>"""
