"""The published page in a real browser: headless Chromium driven over ``--remote-debugging-pipe`` (stdlib only).

Chromium comes from the distribution's packages, installed by the opt-in set-up step ``bash scripts/setup-browser.sh``
(``.ci/run`` runs it); without it the test skips and says so. Set ``GRAIN_BENCH_SCREENSHOT=path.png`` to keep the
screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections import defaultdict
from statistics import mean

import pytest
from test_leaderboard import grid, write_store

from grain_bench.cli import main

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--log-level=3", "--hide-scrollbars"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a Chromium binary, or skip saying how to install it (tests never install system packages)."""
    found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if not found:
        pytest.skip("chromium is not installed; install it with `bash scripts/setup-browser.sh` (Debian's chromium "
                    "package, needs root) to run the browser test")
    return found


class Browser:
    """A headless Chromium and one page, spoken to with the DevTools protocol over a pipe (fds 3 and 4)."""

    def __init__(self, binary: str, profile: str, width: int = 1280, height: int = 900):
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # above 4, so the child's dup2 onto 3 and 4 never clobbers its own source
        high_r, high_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child_r, from_child_w))
        os.close(to_child_r)
        os.close(from_child_w)

        def wire():
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                                      f"--window-size={width},{height}", "about:blank"],
                                     pass_fds=(3, 4), preexec_fn=wire, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(high_r)
        os.close(high_w)
        self._buffer = b""
        self._next_id = 0
        self.session = None
        self.width, self.height = width, height

    def send(self, method: str, params: dict | None = None, timeout: float = 30.0, session: bool = True) -> dict:
        """Send one command and wait for its answer (events in between are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise TimeoutError(f"no answer to {method} (chromium exit code {self.proc.poll()})")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self._buffer += chunk

    def open(self, url: str) -> None:
        """Open ``url`` in a new page and wait until the page's script has run."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                         "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.enable")
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + 30
        ready = ("document.readyState + ':' + (document.documentElement && "
                 "document.documentElement.getAttribute('data-ready'))")
        while self.js(ready) != "complete:1":  # about:blank, then the page loading, then its script done
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading")
            time.sleep(0.1)

    def js(self, expression: str):
        """Evaluate ``expression`` in the page and return its value."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the middle of the first element matching ``selector``."""
        box = self.js(f"(function(){{var e=document.querySelector({json.dumps(selector)}); e.scrollIntoView("
                      "{block:'center'}); var r=e.getBoundingClientRect(); return [r.x+r.width/2, r.y+r.height/2];})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1})

    def screenshot(self, path: str) -> None:
        """A PNG of the whole page."""
        self.js("window.scrollTo(0, 0)")
        height = int(self.js("document.documentElement.scrollHeight"))
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": min(height, 4000),
                                                         "deviceScaleFactor": 1, "mobile": False})
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as handle:
            handle.write(base64.b64decode(data))

    def close(self) -> None:
        """Ask Chromium to quit, then make sure it has."""
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", session=False, timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)


ROWS_JS = """JSON.stringify(Array.from(document.querySelectorAll('section.task')).map(function (s) {
  return {task: s.getAttribute('data-task'), rows: Array.from(s.querySelectorAll('tbody tr')).map(function (r) {
    return {method: r.getAttribute('data-method'), options: r.getAttribute('data-options'),
            target: parseFloat(r.getAttribute('data-target')), seeds: parseInt(r.cells[5].textContent, 10),
            score: r.cells[4].getAttribute('data-sort'), density: r.cells[3].getAttribute('data-sort'),
            runs: r.getAttribute('data-run-ids')};
  })};
}))"""


def expected_rows(records):
    """What the page must show, computed straight from the records: per task, (method, target) -> seeds, mean."""
    groups = defaultdict(list)
    for record in records:
        groups[(record.spec.task, record.spec.method, record.spec.target_density)].append(record)
    out = defaultdict(dict)
    for (task, method, target), runs in groups.items():
        out[task][(method, target)] = (len(runs), mean(r.scores["accuracy"] for r in runs),
                                       sorted(r.run_id for r in runs))
    return out


@pytest.mark.browser
def test_page_in_headless_chromium(chromium, tmp_path):
    records = grid(("tweets", "sst2"))
    results = write_store(tmp_path / "results", records)
    site = tmp_path / "site"
    assert main(["leaderboard", "publish", "--results", results, "--out", str(site)]) == 0
    browser = Browser(chromium, str(tmp_path / "profile"))
    try:
        browser.open((site / "index.html").resolve().as_uri())
        shown = json.loads(browser.js(ROWS_JS))
        expected = expected_rows(records)
        assert sorted(s["task"] for s in shown) == sorted(expected)
        for section in shown:
            rows = [r for r in section["rows"] if r["method"] != "teacher"]
            assert len(rows) == len(expected[section["task"]])
            for row in rows:
                seeds, score, run_ids = expected[section["task"]][(row["method"], row["target"])]
                assert row["seeds"] == seeds
                assert float(row["score"]) == pytest.approx(score)
                assert sorted(row["runs"].split(",")) == run_ids
            assert section["rows"][0]["method"] == "teacher"

        def column(index):
            return browser.js(f"Array.from(document.querySelectorAll('#table-0 tbody tr')).map("
                              f"function (r) {{ return r.cells[{index}].getAttribute('data-sort'); }})")

        browser.click("#table-0 thead th:nth-child(5)")  # the score column: ascending
        scores = [float(v) for v in column(4)]
        assert scores == sorted(scores) and scores != [float(v) for v in sorted(column(4), key=float, reverse=True)]
        assert browser.js("document.querySelector('#table-0 thead th:nth-child(5)').getAttribute('aria-sort')") \
            == "ascending"
        browser.click("#table-0 thead th:nth-child(5)")  # again: descending
        assert [float(v) for v in column(4)] == sorted(scores, reverse=True)
        browser.click("#table-0 thead th:nth-child(4)")  # density: ascending
        densities = [float(v) for v in column(3)]
        assert densities == sorted(densities) and densities[0] < densities[-1]
        # details open on a click and show the versions and the environment
        browser.click("#table-0 tbody tr:first-child details summary")
        opened = browser.js("document.querySelector('#table-0 tbody tr:first-child details').open")
        assert opened is True
        assert "torch" in browser.js("document.querySelector('#table-0 tbody tr:first-child details').textContent")
        # plots are embedded and decoded without a network
        loaded = "Array.from(document.images).every(function (i) { return i.complete && i.naturalWidth > 0; })"
        assert browser.js(loaded)
        shot = tmp_path / "leaderboard.png"
        browser.screenshot(str(shot))
    finally:
        browser.close()
    with open(shot, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(shot) > 20_000  # a real rendering, not a blank page
    keep = os.environ.get("GRAIN_BENCH_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
