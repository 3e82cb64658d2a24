"""
Fixtures of the browser tests (`make test-ui`): a real Airflow, Debian's Chromium driven by Playwright, screenshots.

Not collected by plain ``pytest`` (pyproject's ``--ignore=tests/ui``); ``pytest tests/ui`` runs them. The session
sandbox (``sandbox`` in tests/conftest.py, with its distinctive secrets) serves both platforms from this process;
the Airflow task workers reach it on 127.0.0.1. The connections pointing at it are created by the tests themselves,
through the connection form.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest
from ui_airflow import ROOT, AirflowServer

# Debian's Chromium; Playwright must never download a browser of its own (it cannot, here).
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
CHROMIUM = os.environ.get("M2M_UI_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(os.environ.get("M2M_UI_SCREENSHOTS") or ROOT / "ui-screenshots").resolve()
# Tall enough that the whole trigger form (and the connection form with its extras open) fits in one screenshot.
VIEWPORT = {"width": 1280, "height": 1700}


def pytest_configure(config):
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        raise pytest.UsageError(
            f"Chromium not found at {CHROMIUM}: the browser tests need it (`make test-ui` installs Debian's "
            "chromium package; or set M2M_UI_CHROMIUM to a Chromium binary)."
        )
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)


def pytest_terminal_summary(terminalreporter):
    shots = sorted(p.name for p in SCREENSHOTS.glob("*.png")) if SCREENSHOTS.is_dir() else []
    terminalreporter.write_sep("-", "UI screenshots")
    terminalreporter.write_line(f"{len(shots)} screenshots in {SCREENSHOTS}")
    for name in shots:
        terminalreporter.write_line(f"  {name}")


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """The folder the screenshots go to (printed at the end of the session)."""
    return SCREENSHOTS


@pytest.fixture(scope="session")
def airflow_server(tmp_path_factory, sandbox):
    """A real Airflow 3 on loopback with the project's DAGs, started once; stopped (process groups) at the end."""
    home = tmp_path_factory.mktemp("airflow-ui-home")
    # A SIGTERM (CI giving up, say) must still run the teardown that stops Airflow's process groups.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with AirflowServer(home) as server:
        server.wait_until(
            lambda: server.api("GET", "/api/v2/dags/sms_notification_run")[0] == 200,
            120,
            "the dag-processor to parse the example DAGs",
        )
        status, errors = server.api("GET", "/api/v2/importErrors")
        assert status == 200 and errors["total_entries"] == 0, f"import errors in the example DAGs: {errors}"
        yield server
    signal.signal(signal.SIGTERM, previous)
    secrets = (sandbox.credentials["m2m_password"], sandbox.credentials["daraja_secret"], *sandbox.issued_tokens())
    leaks = _places_holding(home, secrets)
    assert not leaks, f"a sandbox secret or Daraja token is in the Airflow home: {leaks}"


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _places_holding(home: Path, secrets) -> list[str]:
    """Files under the Airflow home (task and component logs, reports) and DB tables holding any of ``secrets``."""
    found = set()
    for path in home.rglob("*"):
        if path.is_file() and not path.name.startswith("airflow.db"):
            text = path.read_bytes().decode("utf-8", "replace")
            found.update(str(path.relative_to(home)) for secret in secrets if secret in text)
    with sqlite3.connect(home / "airflow.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in sorted(tables & {"xcom", "rendered_task_instance_fields", "task_state_store", "log"}):
            for row in db.execute(f"SELECT * FROM {table}"):  # table names from the set above
                text = " ".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row)
                found.update(f"table {table}" for secret in secrets if secret in text)
    return sorted(found)


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium under Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def page(browser, airflow_server):
    """One logged-in tab for the whole session: the login form, filled as a user would."""
    from playwright.sync_api import expect

    # Pages load and logs arrive slower on a busy 2-core machine than Playwright's 5 s default assumes.
    expect.set_options(timeout=30_000)
    airflow = airflow_server
    context = browser.new_context(viewport=VIEWPORT, base_url=airflow.base_url)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    tab.goto("/")
    tab.get_by_label("Username").fill(airflow.username)
    tab.get_by_label("Password").fill(airflow.password)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(lambda url: "/login" not in url)
    expect(tab.get_by_role("link", name="Dags").first).to_be_visible()
    yield tab
    context.close()


@pytest.fixture(autouse=True)
def _screenshot_on_failure(request):
    """Keep what the browser showed when a test failed, next to the other screenshots."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "page" in request.fixturenames:
        from playwright.sync_api import Error as PlaywrightError

        try:
            request.getfixturevalue("page").screenshot(path=SCREENSHOTS / f"FAILED-{request.node.name}.png")
        except PlaywrightError as exc:  # a dead browser must not hide the test's own failure
            print(f"no screenshot of the failure: {exc.message}")
