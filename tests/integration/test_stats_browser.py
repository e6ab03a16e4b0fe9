"""The stats page in a real browser: Debian's chromium, driven by selenium through chromedriver.

ddiscover runs in this process on the real reactor, against a real etcd and real backend
processes; the browser runs in a thread (its calls block) while the reactor serves the page.
The test checks the rows and their colours as chromium computes them, before and after a
backend is SIGKILLed, drains a server through the admin form, and saves screenshots in a
temporary directory of its own, kept for a person to look at (their paths are printed).

It is skipped where chromium or selenium is missing, except in CI (``.ci/run`` sets
``DDISCOVER_REQUIRE_BROWSER``), where that is a failure.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest

from tests.integration.backends import ProcessBackend
from tests.integration.harness import InProcessTestCase, address
from tests.integration.support import eventually, free_port, greeting

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.ui import Select, WebDriverWait

    SELENIUM = True
except ImportError:  # pragma: no cover - the [test] extra installs it
    SELENIUM = False

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
USER, PASSWORD = "admin", "s3cret"
HOSTILE = "<script>document.title='pwned'</script>"

# haproxy's row colours, as chromium computes them.
GREEN = "rgba(192, 255, 192, 1)"
RED = "rgba(255, 144, 144, 1)"
BLUE = "rgba(32, 160, 255, 1)"

T = TypeVar("T")


class Browser:
    """A headless chromium with the flags of docs (pitfalls A7), sending basic auth itself."""

    def __init__(self, profile: str) -> None:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--window-size=1500,900",
        ):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )

    def rows(self, service: str) -> dict[str, tuple[str, str]]:
        """Per row of ``service``'s table: its CSS class and computed background colour."""
        table = self.driver.find_element(By.ID, f"px-{service}")
        return {
            row.get_attribute("data-server") or "": (
                row.get_attribute("class") or "",
                row.value_of_css_property("background-color"),
            )
            for row in table.find_elements(By.CSS_SELECTOR, "tr[data-server]")
        }

    def full_screenshot(self, path: str) -> None:
        """Resize the window to the whole page, then save a PNG of it."""
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1500, max(900, int(height) + 40))
        self.driver.save_screenshot(path)

    def quit(self) -> None:
        self.driver.quit()


class StatsBrowserTests(InProcessTestCase):
    """The page a running ddiscover serves, as chromium renders it."""

    timeout = 90
    settings: ClassVar[dict[str, Any]] = {
        "stats_auth": (USER, PASSWORD),
        "check_interval": 0.2,
        "rise": 2,
        "fall": 2,
        "connect_timeout": 1.0,
        "drain_timeout": 1.0,
    }

    def setUp(self) -> None:
        missing = None
        if not SELENIUM:
            missing = "selenium is not installed (pip install -e '.[test]')"
        elif not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
            missing = "chromium and chromium-driver are not installed (scripts/install --test)"
        if missing is not None:
            if os.environ.get("DDISCOVER_REQUIRE_BROWSER"):
                self.fail(missing)
            raise SkipTest(missing)
        super().setUp()
        self.stats_port = free_port()
        self.start(stats_port=self.stats_port)
        self.url = f"http://127.0.0.1:{self.stats_port}/;norefresh"
        # Kept after the test, for a person to look at: the paths are printed.
        self.shots = tempfile.mkdtemp(prefix="ddiscover-stats-browser-")

    async def in_thread(self, call: Callable[..., T], *args: Any) -> T:
        """Run a blocking browser call off the reactor thread, so the reactor serves it."""
        result: T = await deferToThread(call, *args)
        return result

    async def open_browser(self) -> Browser:
        profile = tempfile.mkdtemp(prefix="ddiscover-chromium-")
        self.addCleanup(shutil.rmtree, profile, ignore_errors=True)
        browser = await self.in_thread(Browser, profile)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(self.in_thread(browser.quit)))
        return browser

    async def test_rows_and_colours_follow_a_killed_backend(self) -> None:
        """UP rows are green; a SIGKILLed backend's row turns red; DRAIN is blue; no XSS."""
        alpha, beta = ProcessBackend.started(self, "alpha"), ProcessBackend.started(self, "beta")
        self.etcd.put("/backends/web/port", str(self.port), ttl=30)
        self.etcd.put("/backends/web/alpha", alpha.address, ttl=30)
        self.etcd.put("/backends/web/beta", beta.address, ttl=30)
        self.etcd.put("/backends/web/broken", "not-an-address")
        self.etcd.put(f"/backends/{HOSTILE}/port", str(free_port()))
        self.etcd.put("/backends/clash/port", str(self.port))
        await self.all_up(alpha.address, beta.address)
        for _ in range(6):
            await greeting(self.port)
        browser = await self.open_browser()

        await self.in_thread(browser.driver.get, self.url)
        rows = await self.in_thread(browser.rows, "web")
        self.assertEqual(set(rows), {"FRONTEND", "alpha", "beta", "BACKEND"})
        self.assertEqual(rows["alpha"], ("active_up", GREEN))
        self.assertEqual(rows["beta"], ("active_up", GREEN))
        self.assertEqual(rows["FRONTEND"][0], "frontend")
        title = await self.in_thread(lambda: browser.driver.title)
        self.assertNotIn("pwned", title)
        names = await self.in_thread(
            lambda: [e.text for e in browser.driver.find_elements(By.CSS_SELECTOR, "th.pxname")]
        )
        self.assertIn(HOSTILE, names)
        page = await self.in_thread(lambda: browser.driver.find_element(By.TAG_NAME, "body").text)
        self.assertIn("ignored /backends/web/broken", page)
        self.assertIn(f"port {self.port} is already used by service web", page)
        before = os.path.join(self.shots, "stats-all-up.png")
        await self.in_thread(browser.full_screenshot, before)

        beta.kill()
        await eventually(lambda: not self.health.is_up(address(beta.address)))
        await self.in_thread(browser.driver.get, self.url)
        rows = await self.in_thread(browser.rows, "web")
        self.assertEqual(rows["beta"], ("active_down", RED))
        self.assertEqual(rows["alpha"], ("active_up", GREEN))

        def drain_alpha() -> None:
            table = browser.driver.find_element(By.ID, "px-web")
            form = table.find_element(By.XPATH, "./ancestor::form")
            form.find_element(By.CSS_SELECTOR, "input[name=s][value=alpha]").click()
            Select(form.find_element(By.NAME, "action")).select_by_value("drain")
            form.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
            WebDriverWait(browser.driver, 10).until(staleness_of(table))

        await self.in_thread(drain_alpha)
        rows = await self.in_thread(browser.rows, "web")
        self.assertEqual(rows["alpha"], ("active_draining", BLUE))
        after = os.path.join(self.shots, "stats-one-down-one-drained.png")
        await self.in_thread(browser.full_screenshot, after)
        print(f"\n    screenshots: {before}\n                 {after}")
