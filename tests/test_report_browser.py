"""``unlearnctl report`` in a real headless browser (Debian's Chromium, ``make browser`` installs it).

Chromium is driven over the Chrome DevTools Protocol by the small stdlib websocket client below (no test
dependency). The page is opened from a ``file://`` URL; the test checks: no console message of level error
or warning, no uncaught exception, no failed request and no request other than ``file:``/``data:`` (nothing
fetched from the network), every ``<img>`` decoded (``complete`` and ``naturalWidth > 0``), the expected
sections (run names, the overview table, the metrics table with its delta column, the audit table, loss
and lambda curves as SVG with drawn polylines, the trade-off plot, the manifest summary), and it takes a
screenshot (a PNG; ``UNLEARNCTL_REPORT_SCREENSHOT=PATH`` keeps it, as docs/img/report.png was made).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from test_report import make_run
from test_report_study import pictured, study, tiny_run  # noqa: F401 (fixtures)

from unlearnctl.commands.report import write_report
from unlearnctl.testing.tiny import tiny_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: in CI (``CI`` set) a missing browser is a failure, not a skip: `make test` installs it there (as root)
IN_CI = bool(os.environ.get("CI"))
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not IN_CI,
    reason="no chromium on PATH: `make browser` installs Debian's chromium (needs root)",
)


class DevTools:
    """A minimal websocket client (RFC 6455, text frames, client masking) speaking CDP to one browser."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        assert url.startswith("ws://")
        hostport, _, path = url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("devtools closed the connection during the handshake")
            head += chunk
        assert head.split(b"\r\n")[0].split()[1] == b"101", head
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("devtools closed the connection")
            buf += chunk
        return buf

    def _send(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        n = len(data)
        header = bytes([0x81])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _recv(self) -> dict[str, Any]:
        message = b""
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            data = self._recv_exact(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("devtools closed the websocket")
            if opcode in (0x9, 0xA):  # ping/pong: nothing we need
                continue
            message += data
            if b0 & 0x80:
                return json.loads(message)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self._send(msg)
        while True:
            reply = self._recv()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self._recv()
            self.events.append(event)
            if event.get("method") == method:
                return event
        raise TimeoutError(method)


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None:
        pytest.fail("CI is set but chromium is not installed: run `make browser` (as root) first")
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().split()) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        tools = DevTools(f"ws://127.0.0.1:{port}{path}")
        yield tools
        tools.sock.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def load_page(tools: DevTools, url: str) -> tuple[str, list[dict[str, Any]]]:
    """Open ``url`` in a new tab with the console, log and network domains on; wait for load."""
    target = tools.call("Target.createTarget", url="about:blank")["targetId"]
    session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        tools.call(f"{domain}.enable", session)
    tools.call(
        "Emulation.setDeviceMetricsOverride", session, width=1280, height=1500, deviceScaleFactor=1, mobile=False
    )
    tools.events.clear()
    tools.call("Page.navigate", session, url=url)
    tools.wait_for("Page.loadEventFired")
    time.sleep(0.3)  # late console messages
    return session, tools.events


def problems(events: list[dict[str, Any]]) -> list[str]:
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            found.append(f"console {params['type']}: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            found.append(f"exception: {params.get('exceptionDetails')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
            found.append(f"log {params['entry']['level']}: {params['entry'].get('text')}")
        elif method == "Network.loadingFailed":
            found.append(f"failed request: {params.get('errorText')}")
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith(("file:", "data:")):
                found.append(f"network request: {url}")
    return found


PAGE_FACTS = """(() => {
  const imgs = [...document.images];
  const q = (s) => document.querySelectorAll(s).length;
  return JSON.stringify({
    images: imgs.length,
    undecoded: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
    runNames: [...document.querySelectorAll('section.run .run-name')].map(e => e.textContent),
    studyNames: [...document.querySelectorAll('section.study .run-name')].map(e => e.textContent),
    studyTables: q('section.study table'),
    overview: q('#overview table.overview tbody tr'),
    deltaHeader: [...document.querySelectorAll('table.metrics th')].some(th => th.textContent === 'delta'),
    deltaCells: q('table.metrics td.delta'),
    audit: q('table.audit tbody tr'),
    charts: [...document.querySelectorAll('svg.chart')].map(s => s.getAttribute('aria-label')),
    curves: q('svg.chart polyline.curve'),
    tradeOff: q('svg#trade-off circle'),
    manifest: q('.manifest-summary dl.manifest dt'),
    scripts: q('script'),
    title: document.title,
  });
})()"""


def check_report(tools: DevTools, html: Path, shot: Path) -> dict[str, Any]:
    session, events = load_page(tools, html.resolve().as_uri())
    assert problems(events) == []
    facts = json.loads(
        tools.call("Runtime.evaluate", session, expression=PAGE_FACTS, returnByValue=True)["result"]["value"]
    )
    shot_data = tools.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=False)["data"]
    png = base64.b64decode(shot_data)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    shot.write_bytes(png)
    keep = os.environ.get("UNLEARNCTL_REPORT_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(png)
    assert problems(tools.events) == []
    return facts


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("browser")
    model = tiny_model(num_classes=10)
    return [
        make_run(root, name, model, audit=(i == 0), k=i + 1) for i, name in enumerate(("erasediff", "neggrad", "<b>x"))
    ]


def test_one_run_in_chromium(browser, runs, tmp_path):
    html = tmp_path / "one.html"
    write_report(runs[:1], html)
    facts = check_report(browser, html, tmp_path / "one.png")
    assert facts["images"] >= 4 and facts["undecoded"] == []
    assert facts["runNames"] == ["erasediff"]
    assert facts["deltaHeader"] and facts["deltaCells"] > 0
    assert facts["audit"] > 0
    assert "loss" in facts["charts"] and "lambda" in facts["charts"] and facts["curves"] >= 3
    assert facts["tradeOff"] == 1 and facts["overview"] == 2  # base model + run
    assert facts["manifest"] > 10 and facts["scripts"] == 0


def test_three_runs_in_chromium(browser, runs, tmp_path):
    html = tmp_path / "three.html"
    write_report(runs, html)
    facts = check_report(browser, html, tmp_path / "three.png")
    assert facts["undecoded"] == [] and facts["images"] >= 12
    assert facts["runNames"] == ["erasediff", "neggrad", "<b>x"]  # the hostile name shown as text
    assert facts["tradeOff"] == 3 and facts["overview"] == 4
    assert facts["charts"].count("loss") == 3


def test_a_study_in_chromium(browser, pictured, tmp_path):  # noqa: F811 (the imported fixture)
    root, pictures = pictured
    html = tmp_path / "study.html"
    write_report([root], html)
    facts = check_report(browser, html, tmp_path / "study.png")
    assert facts["undecoded"] == [] and facts["images"] == 1 + len(pictures)  # the trade-off plot + one per group
    assert facts["studyNames"] == ["study hand-made"] and facts["studyTables"] >= 5
    assert facts["runNames"] == [] and facts["overview"] == 0 and facts["scripts"] == 0


REAL_RUNS = Path(os.environ.get("UNLEARNCTL_REPORT_REAL_RUNS", "/nonexistent"))


@pytest.mark.skipif(not REAL_RUNS.is_dir(), reason="UNLEARNCTL_REPORT_REAL_RUNS names no folder of real runs")
def test_real_runs_in_chromium(browser, tmp_path):
    """Real `forget` + `eval` (+ `audit`) runs: ``UNLEARNCTL_REPORT_REAL_RUNS=/work/audit-runs``."""
    folders = [REAL_RUNS / n for n in ("erasediff", "finetune", "neggrad") if (REAL_RUNS / n).is_dir()]
    html = tmp_path / "real.html"
    write_report(folders, html)
    facts = check_report(browser, html, tmp_path / "real.png")
    assert facts["undecoded"] == [] and len(facts["runNames"]) == len(folders)


def test_checks_catch_a_bad_page(browser, tmp_path):
    """The checks are not vacuous: a page that logs an error, fetches over the network and has a broken
    image fails them."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><img alt='broken' src='data:image/png;base64,AAAA'>"
        "<img alt='remote' src='http://127.0.0.1:9/x.png'><script>console.error('boom')</script></body></html>"
    )
    session, events = load_page(browser, bad.resolve().as_uri())
    found = problems(events)
    assert any("boom" in p for p in found) and any("127.0.0.1:9" in p for p in found)
    facts = json.loads(
        browser.call("Runtime.evaluate", session, expression=PAGE_FACTS, returnByValue=True)["result"]["value"]
    )
    assert set(facts["undecoded"]) == {"broken", "remote"}
