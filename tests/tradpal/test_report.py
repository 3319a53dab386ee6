"""The HTML report, checked in a real headless Chromium: every chart drawn, the metrics listed,
no network, no injection, a million equity rows in a small file.

Chromium is /usr/bin/chromium (or `chromium` on PATH); when missing, the session fixture
installs Debian's package (`apt-get install -y chromium`, needs root) and skips only if that
fails. Set TRADPAL_WRITE_SCREENSHOT=1 to keep the screenshot at docs/report-screenshot.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradpal.report import render_report, write_report

CHARTS = ("equity", "drawdown", "attribution", "slippage", "latency")
HOSTILE = "<script>alert(1)</script>"
REPO = Path(__file__).resolve().parents[2]
LATENCY_FAMILIES = ("signal_to_placement", "placement_to_first_fill", "signal_to_done")


# -- Chromium --------------------------------------------------------------------------

def _find_chromium() -> str | None:
    return next((p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and os.access(p, os.X_OK)), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a Chromium binary, installing Debian's package when missing (as root)."""
    found = _find_chromium()
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("chromium not found and cannot install it (needs apt-get and root)")
    try:
        proc = subprocess.run("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium",
                              shell=True, capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired:
        pytest.skip("installing chromium with apt-get timed out after 20 minutes")
    found = _find_chromium()
    if proc.returncode != 0 or not found:
        pytest.skip(f"apt-get install chromium failed (exit {proc.returncode}): {proc.stderr[-500:]}")
    return found


def run_chromium(binary: str, page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=5000", *args, page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


class Dom(HTMLParser):
    """Just enough of the dumped DOM: each chart's attributes and the marks inside its <svg>,
    the metric rows, the script elements, and each chart's text."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "wbr", "source", "area", "base", "col"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict]] = []
        self.charts: dict[str, dict] = {}
        self.metrics: dict[str, str] = {}
        self.scripts = 0
        self._metric: str | None = None
        self.feed(text)

    def _chart(self) -> dict | None:
        return next((self.charts[a["data-chart"]] for _, a in reversed(self.stack) if "data-chart" in a), None)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k: v or "" for k, v in attrs}
        if "data-chart" in a:
            self.charts[a["data-chart"]] = {"attrs": a, "marks": 0, "text": []}
        elif (chart := self._chart()) is not None and tag in ("path", "rect"):
            chart["marks"] += 1
        self.scripts += tag == "script"
        self._metric = a.get("data-metric") if tag == "tr" else self._metric
        if tag not in self.VOID and not tag.endswith("/"):
            self.stack.append((tag, a))

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.handle_starttag(tag, attrs)
        if self.stack and self.stack[-1][0] == tag:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if (chart := self._chart()) is not None:
            chart["text"].append(data)
        if self._metric and self.stack and self.stack[-1][0] == "td":
            self.metrics[self._metric] = data


# -- sample data -----------------------------------------------------------------------

def sample_equity(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    eq = 10_000 * np.exp(np.cumsum(rng.normal(5e-5, 2e-3, n)))
    ts = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC")
    return pd.DataFrame({"timestamp": ts, "cash": eq / 2, "position_value": eq / 2, "equity": eq})


def sample_fills(n: int = 60, seed: int = 1, other: str = HOSTILE) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "timestamp": pd.date_range("2024-01-01", periods=n, freq="7min", tz="UTC"),
        "side": ["buy", "sell"] * (n // 2), "quantity": 1.0, "price": rng.uniform(90, 110, n), "fee": 0.1,
        "slippage_bps": rng.normal(2, 3, n), "symbol": ["BTC/USDT", "ETH/USDT"] * (n // 2),
        "strategy": ["sma", "sma", other, other] * (n // 4)})


def sample_metrics(other: str = HOSTILE) -> dict:
    latency = {f"latency_{fam}_s_{stat}": k * m for fam, k in zip(LATENCY_FAMILIES, (0.05, 0.3, 0.4), strict=True)
               for stat, m in (("p50", 1), ("p95", 2), ("p99", 3), ("max", 5))}
    return {"sharpe": 1.23, "sortino": 1.8, "calmar": None, "max_drawdown": 0.1234, "max_drawdown_days": 12,
            "var_95": -0.021, "cvar_95": -0.03, "var_99": -0.04, "cvar_99": -0.05, "fill_rate": 0.97,
            "slippage_ref_bps_mean": 2.1, "realized_pnl": 1234.5, "unrealized_pnl": -12.3, "total_fees": 6.0,
            "success_rate": 0.55, "exposure_mean": 0.42, **latency,
            "pnl_by_strategy": {"sma": 900.0, other: -120.5},
            "pnl_by_asset": [{"asset": "BTC/USDT", "pnl": 700.0}, {"asset": "ETH/USDT", "pnl": 79.5}],
            "pnl_by_day": [{"day": "2024-01-01", "pnl": 3.0}, {"day": "2024-01-02", "pnl": -1.0}],
            "rejections_by_step": {"pre-checks": 3, "placement": 1}}


def embedded_data(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)[1])


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    html = render_report(sample_metrics(), sample_equity(5_000), sample_fills(), title=f"Run {HOSTILE}")
    return write_report(html, tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def dom(chromium: str, report: Path, tmp_path_factory: pytest.TempPathFactory) -> Dom:
    return Dom(run_chromium(chromium, report, tmp_path_factory.mktemp("chromium"), "--dump-dom").stdout)


# -- in the browser --------------------------------------------------------------------

@pytest.mark.parametrize("name", CHARTS)
def test_every_chart_is_drawn(dom: Dom, name: str) -> None:
    chart = dom.charts[name]
    assert chart["attrs"].get("data-drawn") == "true", chart["attrs"]
    assert int(chart["attrs"]["data-points"]) > 0
    assert chart["marks"] > 0


def test_marks_match_the_data(dom: Dom) -> None:
    points = {name: int(c["attrs"]["data-points"]) for name, c in dom.charts.items()}
    assert points["attribution"] == 4  # two strategies + two assets
    assert points["latency"] == 4 * len(LATENCY_FAMILIES)  # p50, p95, p99, max per family
    assert 1000 < points["equity"] <= 2000  # 5,000 rows downsampled
    assert {"signal to placement", "signal to done"} <= set(dom.charts["latency"]["text"])


def test_metrics_table_lists_every_scalar_metric_formatted(dom: Dom) -> None:
    scalars = {k for k, v in sample_metrics().items() if not isinstance(v, dict | list)}
    assert scalars <= dom.metrics.keys()
    assert dom.metrics["max_drawdown"] == "12.34%"
    assert dom.metrics["fill_rate"] == "97.00%"
    assert dom.metrics["calmar"] == "—"
    assert dom.metrics["slippage_ref_bps_mean"] == "2.10 bps"
    assert dom.metrics["latency_signal_to_done_s_max"] == "2.000 s"


def test_hostile_names_stay_text_in_the_browser(dom: Dom) -> None:
    assert dom.scripts == 2  # the data and the drawing script, nothing injected
    assert HOSTILE in dom.charts["attribution"]["text"]  # shown as a label, literally


def test_screenshot_is_not_blank(chromium: str, tmp_path: Path) -> None:
    html = render_report(sample_metrics("breakout"), sample_equity(5_000), sample_fills(other="breakout"))
    report, shot = write_report(html, tmp_path), tmp_path / "report.png"
    run_chromium(chromium, report, tmp_path, "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1280,2400")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1280, 2400)
    assert len(png) > 60_000  # a blank or single-colour 1280x2400 page compresses to a few KB
    if os.environ.get("TRADPAL_WRITE_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, REPO / "docs" / "report-screenshot.png")


def test_no_data_is_shown_as_empty(chromium: str, tmp_path: Path) -> None:
    empty_equity = sample_equity(0)
    fills = sample_fills().drop(columns=["slippage_bps"]).iloc[:0]
    page = write_report(render_report({"sharpe": None}, empty_equity, fills), tmp_path)
    charts = Dom(run_chromium(chromium, page, tmp_path, "--dump-dom").stdout).charts
    assert {name: c["attrs"].get("data-drawn") for name, c in charts.items()} == dict.fromkeys(CHARTS, "empty")
    assert all("no data" in c["text"] for c in charts.values())


def test_a_million_equity_rows(chromium: str, tmp_path: Path) -> None:
    equity = sample_equity(1_000_000, seed=2)
    dip = 654_321
    equity.loc[dip, "equity"] *= 0.5  # one bar deep: must survive downsampling
    started = time.perf_counter()
    page = write_report(render_report(sample_metrics(), equity, sample_fills()), tmp_path)
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"rendering 1,000,000 rows took {elapsed:.1f} s"
    assert page.stat().st_size < 2_000_000
    data = embedded_data(page.read_text())
    assert len(data["equity"]["t"]) <= 2000 and len(data["drawdown"]["t"]) <= 2000
    assert min(data["equity"]["v"]) == equity["equity"].min()
    assert data["equity"]["t"][0] == equity["timestamp"].iloc[0].value // 10**6
    peak = equity["equity"].cummax()
    assert min(data["drawdown"]["v"]) == pytest.approx(((equity["equity"] / peak).min() - 1) * 100, abs=1e-5)
    charts = Dom(run_chromium(chromium, page, tmp_path, "--dump-dom").stdout).charts
    assert charts["equity"]["attrs"]["data-drawn"] == "true"
    assert 1000 < int(charts["equity"]["attrs"]["data-points"]) <= 2000


# -- the HTML itself -------------------------------------------------------------------

def test_self_contained_and_offline(report: Path) -> None:
    html = report.read_text()
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"\s(src|href)\s*=|url\(|@import", html, re.I)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert html.count("<script") == 2


def test_hostile_names_are_escaped(report: Path) -> None:
    html = report.read_text()
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the title and the pnl_by_strategy table
    data = embedded_data(html)
    assert [HOSTILE, -120.5] in data["attribution"]["groups"][0]["items"]


def test_attribution_falls_back_to_fills_by_side() -> None:
    fills = pd.DataFrame({"timestamp": pd.Timestamp("2024-01-01", tz="UTC"), "side": ["buy", "sell"],
                          "quantity": [2.0, 1.0], "price": [100.0, 110.0], "fee": [0.5, 0.25]})
    data = embedded_data(render_report({}, sample_equity(10), fills))
    assert dict(map(tuple, data["attribution"]["groups"][0]["items"])) == {"buy": -200.5, "sell": 109.75}
    assert data["slippage"] == {"edges": [], "counts": []}


def test_slippage_histogram_from_metrics_when_fills_have_none() -> None:
    metrics = {"slippage_bps_histogram": {"edges": [-1.0, 0.0, 1.0], "counts": [3, 5]}}
    data = embedded_data(render_report(metrics, sample_equity(10), sample_fills().drop(columns=["slippage_bps"])))
    assert data["slippage"] == {"edges": [-1.0, 0.0, 1.0], "counts": [3, 5]}


def test_write_report_replaces_atomically(tmp_path: Path) -> None:
    first = write_report("<p>one</p>", tmp_path / "out")
    second = write_report("<p>two</p>", tmp_path / "out")
    assert first == second == tmp_path / "out" / "report.html"
    assert second.read_text() == "<p>two</p>"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.html"]  # no temporary left behind
