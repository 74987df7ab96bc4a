"""A proposal's review page in the MLflow UI's artifact view, in a real (headless) Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them
when it runs as root); without them the test fails, it never skips. MLflow
asks every request for a basic-auth login: the browser sends an analyst's
(an MLflow user with no grant, so READ only) on every request it makes,
through the DevTools protocol, as a reviewer's browser would after its login.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from pipeline.config import Settings
from pipeline.controller.handover import to_registry
from pipeline.optimizer import ExplorationBatch, Trajectory, load_spec, optimize
from pipeline.registry.policies import register_proposal
from pipeline.registry.review_page import verdict
from pipeline.sim import sample_segment, scenario
from tests.integration._control import mlflow_user

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SPEC = Path(__file__).resolve().parents[2] / "policies" / "earlystop.yaml"
SIZES = {"acme/qa/short": 3000, "acme/math/short": 1500, "globex/qa/long": 200}
WIDTH, HEIGHT = 1400, 1000
WAIT_S = 30.0


def _batch(key: str, n: int) -> ExplorationBatch:
    return ExplorationBatch.from_trajectories(
        Trajectory(lat.tokens, lat.confidence, lat.correct, lat.correct[-1], lat.tokens[-1])
        for lat in sample_segment(scenario("standard"), key, 5, n)
    )


def _log_in(browser: webdriver.Chrome, env: dict[str, str]) -> None:
    """Send this basic-auth login with every request of the page (and its frames)."""
    login = f"{env['MLFLOW_TRACKING_USERNAME']}:{env['MLFLOW_TRACKING_PASSWORD']}"
    token = base64.b64encode(login.encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
    )


def _text(element: WebElement) -> str:
    return " ".join(element.text.split())


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium through Debian's chromedriver; fails when either is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"the browser check needs {' and '.join(missing)}: install Debian's chromium and "
            "chromium-driver (`apt-get install -y chromium chromium-driver`, or `make test` "
            "as root)",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WIDTH},{HEIGHT}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        driver.set_page_load_timeout(WAIT_S)
        yield driver
    finally:
        driver.quit()


def test_the_review_page_renders_in_the_mlflow_artifact_view(
    browser: webdriver.Chrome, isolated: Settings, ml: Any, tmp_path: Path
) -> None:
    spec = load_spec(SPEC)
    proposal = optimize(spec, {key: _batch(key, n) for key, n in SIZES.items()})
    draft = to_registry(proposal, spec)
    assert draft.facts is not None
    model_name = f"test-review-browser-{uuid.uuid4().hex[:12]}"
    done = register_proposal(
        ml, draft, experiment=isolated.mlflow.experiment, model_name=model_name
    )
    line = " ".join(verdict(draft.facts, draft.review).split())
    experiment_id = ml.get_run(done.run_id).info.experiment_id
    base = ml.tracking_uri.rstrip("/")
    url = f"{base}/#/experiments/{experiment_id}/runs/{done.run_id}/artifacts/review/review.html"

    _log_in(browser, mlflow_user(isolated, "analyst"))
    browser.get(url)
    wait = WebDriverWait(browser, WAIT_S)
    try:
        frame = wait.until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, "iframe.mlflow-html-iframe"))
        )
    except TimeoutException:
        browser.save_screenshot(str(tmp_path / "no-iframe.png"))
        pytest.fail(
            f"no HTML artifact viewer (iframe.mlflow-html-iframe) at {url} after {WAIT_S:g} s; "
            f"page text: {_text(browser.find_element(By.TAG_NAME, 'body'))[:500]!r}"
        )
    assert frame.size["width"] > 300 and frame.size["height"] > 200, frame.size
    browser.switch_to.frame(frame)

    quote = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "blockquote")))
    assert _text(quote) == line
    for key in proposal.body.segments:
        rows = [
            row
            for row in browser.find_elements(By.CSS_SELECTOR, "tr")
            if row.find_elements(By.XPATH, f"./td[1]/code[normalize-space()='{key}']")
        ]
        assert rows and all(row.is_displayed() for row in rows), key
        assert _text(rows[0]).startswith(key), _text(rows[0])

    image = browser.find_element(By.CSS_SELECTOR, "img[src^='data:image/png;base64,']")
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.execute_script("return arguments[0].complete;", image)
    )
    natural = browser.execute_script(
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight];", image
    )
    assert natural[0] > 0 and natural[1] > 0, natural
    assert image.is_displayed() and image.size["width"] > 0

    shot = tmp_path / "review-artifact-view.png"
    browser.switch_to.default_content()
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(shot) as png:
        assert png.size[0] >= WIDTH // 2 and png.size[1] >= HEIGHT // 2, png.size
        colors = png.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 50, f"a nearly blank screenshot: {shot}"
