"""The Prefect UI in a real headless Chromium: log in to the guarded server, start a custom
deployment run, watch it complete."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from playwright.sync_api import Page, Response, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

from tests.deployments.conftest import AUTH, TINY_RETRAIN
from tests.prefect_server import ServeProcess

CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, never a browser downloaded by `playwright install`; no network chatter.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
# Playwright's assertions default to 5 s: too short for a page on a loaded 2-core machine.
STEP_TIMEOUT_MS = 30_000
RUN_TIMEOUT_MS = 300_000  # worker pickup, flow-run subprocess start, training, evaluation
DEPLOYMENT = "retrain"
REPORT_KEY = "retrain-comparison"
# Typed into the form. The nullable fields (width, depth, ...) keep their defaults: the serve
# environment's KOA_INPUT_SIZE keeps that default network fast.
TYPED = {"epochs": TINY_RETRAIN["epochs"], "seed": 7}
SCREENSHOT = "prefect-ui-custom-run.png"
# The UI's request behind Submit. Its error toast is gone within seconds; the response stays.
CREATE_RUN = re.compile(r"/api/deployments/[^/]+/create_flow_run$")
# A 5xx from a server starved on two shared cores is clicked again, as a user would.
SUBMIT_TRIES = 2

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium missing: run make system-deps"),
]


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    """A page in a fresh Chromium profile, so the UI starts without saved preferences."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            context.set_default_timeout(STEP_TIMEOUT_MS)
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def _save_screenshot(page: Page, tmp_path: Path) -> Path:
    path = tmp_path / SCREENSHOT
    page.screenshot(path=path)
    if target := os.environ.get("KOA_SCREENSHOT_DIR"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / SCREENSHOT)
    return path


def _log_in(page: Page) -> None:
    """Prefect's login form: one password field that takes the whole ``user:password``."""
    password = page.get_by_placeholder("admin:pass")
    expect(password).to_be_visible()
    expect(page.get_by_role("link", name="Deployments")).to_have_count(0)  # nothing before it
    password.fill(AUTH.replace(":", ":wrong-", 1))
    page.get_by_role("button", name="Login").click()
    expect(page.get_by_text("Invalid credentials")).to_be_visible()
    password.fill(AUTH)
    page.get_by_role("button", name="Login").click()


def _refused_api_calls(page: Page) -> list[str]:
    """A live list of the page's API calls that the server refused, for failure messages."""
    refused: list[str] = []

    def note(response: Response) -> None:
        if "/api/" in response.url and response.status >= 400:
            refused.append(f"{response.request.method} {response.url} -> {response.status}")

    page.on("response", note)
    return refused


def _is_create_run(response: Response) -> bool:
    return response.request.method == "POST" and bool(CREATE_RUN.search(response.url))


def _submit(page: Page) -> None:
    """Click Submit until the server creates the run; any refusal but a 5xx fails at once,
    with the server's words and the other calls it refused."""
    refused = _refused_api_calls(page)
    for attempt in range(1, SUBMIT_TRIES + 1):
        try:
            with page.expect_response(_is_create_run, timeout=STEP_TIMEOUT_MS) as created:
                page.get_by_role("button", name="Submit").click()
        except PlaywrightTimeoutError:
            pytest.fail(f"Submit sent no create_flow_run; refused calls: {refused}")
        response = created.value
        if response.ok:
            return
        if response.status < 500 or attempt == SUBMIT_TRIES:
            pytest.fail(f"create_flow_run -> {response.status}: {response.text()}; {refused}")


def test_a_custom_run_from_the_ui_completes_with_its_parameters(
    koa_serve: ServeProcess, page: Page, tmp_path: Path
) -> None:
    run_name = f"ui-run-{uuid4().hex[:8]}"

    page.goto(koa_serve.url)
    _log_in(page)
    page.get_by_role("link", name="Deployments").click()
    # The flow has the deployment's name: only the deployment's own page link will do.
    deployment_link = page.locator("a[href*='/deployments/deployment/']")
    page.get_by_role("link", name=DEPLOYMENT, exact=True).and_(deployment_link).click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Custom run").click()
    name_field = page.get_by_label("Run Name")
    # The form fills in a generated name once it has loaded; typing earlier gets overwritten.
    expect(name_field).not_to_have_value("", timeout=STEP_TIMEOUT_MS)
    name_field.fill(run_name)
    for name, value in TYPED.items():
        page.get_by_label(f"{name} (Optional)", exact=True).fill(str(value))
    _submit(page)

    # The confirmation toast links to the new run (the runs list hides it while Scheduled).
    expect(page.get_by_text(f"{run_name} scheduled to start now")).to_be_visible(
        timeout=STEP_TIMEOUT_MS
    )
    page.get_by_text("View run").click()
    expect(page.get_by_text("Completed", exact=True)).to_be_visible(timeout=RUN_TIMEOUT_MS)
    # Artifacts are stored before the run completes, so they are on the page once it loads.
    page.get_by_role("tab", name="Artifacts").click()
    expect(page.get_by_text(REPORT_KEY, exact=True)).to_be_visible(timeout=STEP_TIMEOUT_MS)
    assert _save_screenshot(page, tmp_path).stat().st_size > 0

    with get_client(sync_client=True) as client:
        [flow_run] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name]))
        )
    assert flow_run.state is not None and flow_run.state.is_completed()
    # The form typed the numbers from the flow's schema: they arrive as ints, not strings.
    assert {name: flow_run.parameters.get(name) for name in TYPED} == TYPED
