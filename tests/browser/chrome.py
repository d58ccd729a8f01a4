"""Debian's chromium, headless, driven by selenium through Debian's chromium-driver (both installed by
scripts/setup_inspect.sh). Flags from the offline notes: no network side traffic, a throw-away profile."""
from __future__ import annotations

import shutil

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PROMO_KEY = "fiftyone-enterprise-tooltip-seen"   # the App shows its "Explore Enterprise" pop-up until this is set
READY_S = 300        # how long to wait for the App to render (a readiness wait on 2 shared cores, not a limit)


def open_chromium(profile_dir, width: int = 1400, height: int = 900):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for exe in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(exe), f"{exe} is missing: run scripts/setup_inspect.sh .venv"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--user-data-dir={profile_dir}", f"--window-size={width},{height}"):
        opts.add_argument(a)
    # an explicit driver path: selenium never tries to download one
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def hide_promo(driver, base_url: str) -> None:
    """Mark the App's promotional pop-up as seen (it lives in the browser's localStorage, not in a config)."""
    driver.get(base_url)
    driver.execute_script(f"window.localStorage.setItem('{PROMO_KEY}', 'true')")


def body_text(driver) -> str:
    return driver.find_element("tag name", "body").text


def wait_for_text(driver, text: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, READY_S, poll_frequency=0.5).until(lambda d: text in body_text(d))


def caption_pairs(driver) -> dict[str, str]:
    """{field name: value} as the sample modal's sidebar renders them (a value line above its field name)."""
    text = body_text(driver)
    modal = text[text.rindex("\nAnnotate\n"):] if "\nAnnotate\n" in text else text
    lines = modal.splitlines()
    return {lines[i]: lines[i - 1] for i in range(1, len(lines))}
