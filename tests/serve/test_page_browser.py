"""The page of `nmt serve` in a real browser: Debian's chromium driven by selenium through
chromium-driver. Load the page, type a sentence, click Translate, read the translation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _server import Server, start_server

pytest.importorskip("fastapi", reason="nmt serve needs the serve extra")
httpx = pytest.importorskip("httpx")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SENTENCE = "Ein Hund rennt über die Wiese."


@pytest.fixture(scope="module")
def server(serve_checkpoint: Path, tmp_path_factory) -> Server:
    srv = start_server(serve_checkpoint, tmp_path_factory.mktemp("page") / "serve.log")
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture
def browser(tmp_path: Path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            "no browser: the page test needs Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver)"
        )
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_the_page_translates_what_a_person_types(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    expected = httpx.post(
        f"{server.url}/translate", json={"q": SENTENCE, "source": "de", "target": "en"}
    ).json()["translatedText"]
    browser.get(server.url + "/")
    assert browser.find_element(By.ID, "pair").text == "de → en"
    browser.find_element(By.ID, "source-text").send_keys(SENTENCE)
    browser.find_element(By.ID, "translate").click()
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 60).until(lambda _: status.text.startswith(("Translated", "Error")))
    assert status.text.startswith("Translated in ") and status.text.endswith(" ms"), status.text
    # Both stripped: a hypothesis cut at max_len may end in the piece "▁", a trailing space
    # that the page keeps (white-space: pre-wrap) and WebDriver may or may not report.
    assert browser.find_element(By.ID, "translation").text.strip() == expected.strip()
    assert "POST /translate 200 lines=1" in server.log()
