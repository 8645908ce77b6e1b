"""The UI path in a real browser: headless Debian Chromium, driven through chromedriver, clicks one
conversations partition into existence in dagster-webserver (the daemon runs it with the real
engine), reads the run and the partition's metadata, then sees the partition go unsynced in the
UI once an edited MIND prompt is observed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, materialize
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from mind_assets.conversations.assets import mind_prompts
from mind_assets.conversations.styles import style_prompt_path
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.corpus.shards import register_shard
from mind_assets.definitions import ASSETS
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import PROJECT_DIR, get_settings
from mind_assets_tests.conftest import napkin_shard

pytestmark = pytest.mark.engine
BIN = Path(sys.executable).parent
SHARD, STYLE = "ui", "teacher_student"
PARTITION = f"{SHARD}|{STYLE}"
# Headless Chromium with everything that would phone home switched off: this machine's network
# is closed, and a browser that keeps retrying update and sync endpoints stalls its own pages.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
]
# Generous: on two busy CPU cores the first page compiles a large bundle, and the run loads an
# engine in a fresh process (four minutes at a load average of 15).
PAGE_TIMEOUT = 120
RUN_TIMEOUT = 900
# The instance of the test: no telemetry, no first-visit newsletter dialog (the webserver shows it
# on 127.0.0.1 over whatever page opens first), and the daemon's run queue checked every second
# rather than every 5 s, for the test's two launched runs.
INSTANCE_YAML = """\
telemetry:
  enabled: false
nux:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""

MATERIALIZATION = """
query Materialization($partition: String!) {
  assetOrError(assetKey: {path: ["conversations"]}) {
    ... on Asset {
      assetMaterializations(limit: 1, partitions: [$partition]) {
        runId partition
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on TextMetadataEntry { text }
        }
      }
    }
  }
}"""
CHECKS = """
query Checks($name: String!) {
  assetCheckExecutions(assetKey: {path: ["conversations"]}, checkName: $name, limit: 1) {
    runId status evaluation { success }
  }
}"""
STALE = """
query Stale($partition: String!) {
  assetNodeOrError(assetKey: {path: ["conversations"]}) {
    ... on AssetNode {
      staleStatus(partition: $partition)
      staleCauses(partition: $partition) { key { path } partitionKey reason category }
    }
  }
}"""


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = httpx.post(
        f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
    )
    response.raise_for_status()
    payload = response.json()
    assert "errors" not in payload, payload["errors"]
    return payload["data"]


def shows(text: str) -> str:
    """The innermost element whose whole visible text is `text` (React splits text nodes)."""
    return f"//*[normalize-space(.)='{text}'][not(*[normalize-space(.)='{text}'])]"


def together(*texts: str) -> str:
    """The innermost element holding all of `texts`, each as some element's whole text."""
    holds = " and ".join(f".//*[normalize-space(.)='{t}']" for t in texts)
    return f"//*[{holds}][not(*[{holds}])]"


def button(label: str) -> str:
    return f"//button[normalize-space(.)='{label}']"


def partition_option(key: str) -> str:
    """A partition key in an open partition picker (one checkbox row per key)."""
    return f"//div[@role='menuitem'][.//div[@title='{key}']]"


def partition_picker(dimension: str) -> str:
    """The still-empty picker below a dimension's heading in the launch dialog."""
    return (
        f"//*[normalize-space(text())='{dimension}']"
        "/following::*[normalize-space(text())='Select a partition or create one'][1]"
    )


class Browser:
    """Chromium through chromedriver, waiting on what a person would see before acting on it."""

    def __init__(self, driver: WebDriver, url: str, shots_dir: Path) -> None:
        self.driver = driver
        self.url = url
        self.shots_dir = shots_dir
        self.shots: list[Path] = []

    def open(self, path: str) -> None:
        self.driver.get(path if path.startswith("http") else self.url + path)

    def find(self, xpath: str, timeout: float = PAGE_TIMEOUT) -> WebElement:
        """The first displayed element that matches, once there is one."""

        def shown(driver: WebDriver) -> WebElement | bool:
            for element in driver.find_elements(By.XPATH, xpath):
                try:
                    if element.is_displayed():
                        return element
                except StaleElementReferenceException:
                    pass  # React re-rendered it; look again
            return False

        return WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(
            shown, message=f"nothing on {self.driver.current_url} shows {xpath}"
        )

    def text(self, xpath: str, timeout: float = PAGE_TIMEOUT) -> str:
        while True:
            try:
                return self.find(xpath, timeout).text
            except StaleElementReferenceException:
                pass  # re-rendered between finding and reading

    def click(self, xpath: str, timeout: float = PAGE_TIMEOUT) -> None:
        """Click the element once it is shown, enabled and not covered (toasts, popovers)."""

        def clicked(driver: WebDriver) -> bool:
            for element in driver.find_elements(By.XPATH, xpath):
                try:
                    if element.is_displayed() and element.is_enabled():
                        element.click()
                        return True
                except (
                    ElementClickInterceptedException,
                    ElementNotInteractableException,
                    StaleElementReferenceException,
                ):
                    pass
            return False

        WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(
            clicked, message=f"could not click {xpath} on {self.driver.current_url}"
        )

    def hover(self, xpath: str) -> None:
        ActionChains(self.driver).move_to_element(self.find(xpath)).perform()

    def escape(self) -> None:
        ActionChains(self.driver).send_keys(Keys.ESCAPE).perform()

    def shot(self, name: str) -> None:
        self.shots_dir.mkdir(parents=True, exist_ok=True)
        path = self.shots_dir / f"{len(self.shots) + 1:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        self.shots.append(path)

    def launched_run(self) -> str:
        """The run page a launch's toast links to (the toast stays a few seconds)."""
        return self.find("//a[normalize-space(.)='View'][contains(@href, '/runs/')]").get_attribute(
            "href"
        )

    def wait_for_run(self, run_url: str) -> str:
        """Open a run's page and wait until its header shows how the run ended."""
        self.open(run_url)
        return self.text(f"{shows('Success')} | {shows('Failure')}", timeout=RUN_TIMEOUT)

    def open_partition(self, asset: str, *keys: str) -> None:
        """The asset's Partitions tab, then one key per dimension in its partition lists."""
        self.open(f"/assets/{asset}")
        self.click(shows("Partitions"))
        for key in keys:
            self.click(shows(key))
        self.find(shows("|".join(keys)))


def require_chromium() -> tuple[str, str]:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail(
            "The UI test needs Debian's chromium and chromium-driver (chromium "
            f"{chromium or 'missing'}, chromedriver {chromedriver or 'missing'}): "
            "apt-get install -y chromium chromium-driver (make test and .ci/run install them)",
            pytrace=False,
        )
    return chromium, chromedriver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """Headless Chromium; screenshots land in <tmp_path>/screenshots, and also in
    MIND_UI_SCREENSHOTS=<dir> when it is set (how docs/screenshots/ was made)."""
    chromium_path, chromedriver_path = require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    # Naming the driver keeps Selenium Manager (which would try to download one) out of it.
    service = Service(
        executable_path=chromedriver_path, log_output=str(tmp_path / "chromedriver.log")
    )
    driver = webdriver.Chrome(options=options, service=service)
    shots = Browser(driver, "", tmp_path / "screenshots")
    try:
        yield shots
    finally:
        driver.quit()
        if target := os.environ.get("MIND_UI_SCREENSHOTS"):
            Path(target).mkdir(parents=True, exist_ok=True)
            for shot in shots.shots:
                shutil.copyfile(shot, Path(target) / shot.name)


def start_ui(env: dict[str, str], logs: Path) -> tuple[str, list[subprocess.Popen]]:
    """dagster-webserver and dagster-daemon on a free loopback port, as `make ui` runs them."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    processes = []
    for name, *args in (
        ("dagster-webserver", "-h", "127.0.0.1", "-p", str(port)),
        ("dagster-daemon", "run"),
    ):
        with open(logs / f"{name}.log", "w") as log:
            processes.append(
                subprocess.Popen(
                    [str(BIN / name), *args, "-w", "workspace.yaml"],
                    cwd=PROJECT_DIR,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                return url, processes
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or processes[0].poll() is not None:
            stop(processes)
            raise AssertionError(f"webserver did not start; see {logs / 'dagster-webserver.log'}")
        time.sleep(2)


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        os.killpg(process.pid, 9)
        process.wait(timeout=30)


def test_materialize_a_partition_by_clicking_and_see_it_unsynced_after_a_prompt_edit(
    settings, tmp_path, monkeypatch, browser
):
    # The test's own prompts, so that editing one touches nothing outside this test.
    prompts = tmp_path / "prompts"
    shutil.copytree(PROJECT_DIR / "prompts", prompts)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MIND_PROMPTS_DIR", str(prompts))
    monkeypatch.setenv("MIND_MAX_TOKENS", "48")
    settings = get_settings()
    instance = DagsterInstance.from_config(str(home))
    register_shard(instance, settings, napkin_shard(SHARD, 1))
    resources = {"llm": LLMResource.from_settings(settings)}
    # What a person has before opening the UI: prompt versions observed, the shard's chunks.
    materialize(ASSETS, selection=[mind_prompts], instance=instance, resources=resources)
    assert materialize(
        [raw_documents, chunks], partition_key=SHARD, instance=instance, resources=resources
    ).success

    logs = tmp_path / "logs"
    logs.mkdir()
    # The run process loads its own engine and exits with it. The code server and the run import
    # this checkout, as `make ui` does from the repository root.
    env = {
        **os.environ,
        "MIND_KEEP_ENGINE_BETWEEN_RUNS": "0",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(PROJECT_DIR), os.environ.get("PYTHONPATH")) if p
        ),
    }
    url, processes = start_ui(env, logs)
    browser.url = url
    try:
        # Materialize… on the asset page opens the launch dialog, with one partition picker per
        # dimension of shard × style.
        browser.open("/assets/conversations")
        browser.click(button("Materialize…"))
        for dimension, key in (("shard", SHARD), ("style", STYLE)):
            browser.click(partition_picker(dimension))
            browser.find(partition_option(key))
            if dimension == "style":
                browser.shot("partition-picker")
            browser.click(partition_option(key))
            browser.escape()  # closes the picker, keeps the dialog
        browser.find(shows("1 partition"))
        browser.shot("launch-dialog-one-partition")
        browser.click(button("Launch 1 run"))
        run_url = browser.launched_run()

        status = browser.wait_for_run(run_url)
        browser.find(shows(f"partition: {PARTITION}"))
        browser.shot("run")
        assert status == "Success", f"{run_url} ended {status}; logs in {logs}"

        browser.open_partition("conversations", SHARD, STYLE)
        browser.find(shows("Materialized"))
        metadata_value = "//tr[td[normalize-space(.)='{}']]/td[2]"
        assert browser.text(metadata_value.format("prompt_id")) == f"mind/enhanced/{STYLE}"
        assert int(browser.text(metadata_value.format("dagster/row_count"))) >= 1
        assert int(browser.text(metadata_value.format("generated_requests"))) >= 1
        assert '"max_tokens": 48' in browser.text(metadata_value.format("sampling"))
        # Generated in the run's process by the offline vLLM engine on the configured model.
        assert browser.text(metadata_value.format("model")) == resources["llm"].model_name
        assert '"offline": 1' in browser.text(metadata_value.format("served_by"))
        browser.shot("partition-metadata")

        # What the browser showed is what Dagster recorded: this run, both checks passed, fresh.
        [latest] = graphql(url, MATERIALIZATION, {"partition": PARTITION})["assetOrError"][
            "assetMaterializations"
        ]
        assert run_url.endswith(latest["runId"]) and latest["partition"] == PARTITION
        for check in ("every_chunk_has_a_conversation", "lineage_non_null"):
            execution = graphql(url, CHECKS, {"name": check})["assetCheckExecutions"][0]
            assert run_url.endswith(execution["runId"]), execution
            assert execution["evaluation"]["success"], execution
        stale = graphql(url, STALE, {"partition": PARTITION})["assetNodeOrError"]
        assert stale["staleStatus"] == "FRESH", stale

        # Edit the style's prompt, then Observe mind_prompts in the UI (the README's steps).
        prompt_path = style_prompt_path(prompts, STYLE)
        prompt_path.write_text(prompt_path.read_text() + "# edited by the UI test\n")
        browser.open("/assets/mind_prompts")
        browser.click(button("Observe"))
        observe_url = browser.launched_run()
        assert browser.wait_for_run(observe_url) == "Success", f"{observe_url}; logs in {logs}"

        browser.open_partition("conversations", SHARD, STYLE)
        browser.hover(shows("Unsynced (1)"))
        browser.find(shows("1 upstream data version change"))
        browser.find(together("mind_prompts", "has a new data version"))
        browser.shot("unsynced-after-prompt-edit")
        stale = graphql(url, STALE, {"partition": PARTITION})["assetNodeOrError"]
        assert stale["staleStatus"] == "STALE", stale
        assert [(c["key"]["path"], c["partitionKey"]) for c in stale["staleCauses"]] == [
            (["mind_prompts"], STYLE)
        ], stale
    except Exception:
        browser.shot("failure")
        raise
    finally:
        stop(processes)
