"""A headless Chromium driven by Selenium (Debian's chromium + chromedriver, never a
downloaded browser), for tests of ComfyUI's own page with this pack loaded.

The browser and its driver run in their own process group, stopped by its id.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from ci_policy import need


def browser_paths() -> tuple[str | None, str | None]:
    browser = os.environ.get("TWITTERCHAT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    driver = os.environ.get("TWITTERCHAT_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return (browser if os.path.isfile(browser) else None), (driver if os.path.isfile(driver) else None)


@contextlib.contextmanager
def chromium(profile_dir: Path, width: int = 1440, height: int = 1000):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        need(False, "selenium is not installed (pip install selenium)")
    binary, driver_path = browser_paths()
    need(binary is not None and driver_path is not None,
         "chromium and chromedriver are missing (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                     f"--user-data-dir={profile_dir}", "--no-first-run", "--disable-background-networking",
                     "--disable-features=Translate,MediaRouter"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(driver_path, popen_kw={"start_new_session": True})
    driver = webdriver.Chrome(options=options, service=service)
    group = service.process.pid
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_js(driver, script: str, timeout: float = 30.0, message: str = "", args: tuple = ()):
    """Poll a script (``return ...``) until its value is truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for: {message or script}")
        time.sleep(0.1)


def open_comfyui(driver, base_url: str) -> None:
    """ComfyUI's page, with its graph and this pack's extensions registered."""
    driver.get(base_url + "/")
    wait_js(driver, "return !!(window.app && app.graph && app.canvas && app.extensions && "
                    "app.extensions.some((e) => e.name === 'comfyui-twitterchat.nodes'))", 120,
            "ComfyUI's page with the pack's extension")


def pack_console_errors(driver) -> list[str]:
    """SEVERE console entries from the pack's own scripts (ComfyUI's own first-load noise and its
    failed requests to online services are not the pack's)."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and "/extensions/comfyui-twitterchat/" in entry["message"]]
