"""A self-contained, offline HTML post-trade report: one file, inline CSS and JS, no network.

`render_report(metrics, equity, fills)` returns the HTML; `write_report(html, out_dir)` writes
`report.html` atomically. The data for the charts (equity, drawdown, P&L attribution, slippage
histogram, latency percentiles) is embedded as JSON and drawn into `<svg>`s by the inline script;
the metrics table is rendered here. Each chart container carries `data-chart="<name>"`; once
drawn, the script sets `data-drawn="true"` and `data-points="<marks drawn>"` on it, or
`data-drawn="empty"` when there is no data for it.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from html import escape
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd

MAX_POINTS = 2000  # per downsampled series
MAX_TABLE_ROWS = 100  # per nested metric table
_PERCENT = re.compile(r"^(c?var_\d+|max_drawdown|exposure_.*|.*_rate(_.*)?|.*_return)$")  # fractions
_LATENCY = re.compile(r"^latency_(?P<family>.+)_s_(?P<stat>p50|p95|p99|max)$")
_LATENCY_STATS = ("p50", "p95", "p99", "max")
_PNL_KEYS = ("pnl", "net_pnl", "total_pnl", "realized_pnl", "value")
_LABEL_KEYS = ("strategy", "asset", "symbol", "name", "key", "day", "date", "step")


def render_report(metrics: dict, equity: pd.DataFrame, fills: pd.DataFrame, *,
                  title: str = "TradPal post-trade report") -> str:
    """The report as one HTML document; `metrics` is a flat JSON-safe dict (any keys)."""
    metrics = dict(metrics or {})
    equity_series, drawdown_series, summary = _equity_data(equity)
    data = {"equity": equity_series, "drawdown": drawdown_series, "attribution": _attribution(metrics, fills),
            "slippage": _slippage(metrics, fills), "latency": _latency(metrics)}
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    n_fills = 0 if fills is None else len(fills)
    cards = "".join(f'<div class="card"><span>{_e(k)}</span><b>{_e(v)}</b></div>'
                    for k, v in [*summary, ("Fills", f"{n_fills:,}")])
    charts = "".join(f'<section class="chart{" wide" if wide else ""}" data-chart="{name}"><h2>{_e(head)}</h2>'
                     f'<svg role="img" aria-label="{_e(head)}"></svg></section>' for name, head, wide in _CHARTS)
    body = (f"<header><h1>{_e(title)}</h1>{cards}</header><main>{charts}"
            f'<section class="table" data-table="metrics"><h2>Metrics</h2><div class="cols">'
            f"<div>{_metrics_table(metrics)}</div><div>{_nested_tables(metrics)}</div></div></section></main>")
    parts = {"title": _e(title), "css": _CSS, "body": body, "data": payload, "js": _JS}
    return re.sub(r"\{(title|css|body|data|js)\}", lambda m: parts[m[1]], _PAGE)  # one pass: text stays text


def write_report(html: str, out_dir: str | os.PathLike) -> Path:
    """Write `out_dir/report.html` through a temporary file and a rename (never half a file)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".report.html.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(html)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


_CHARTS = [("equity", "Equity", True), ("drawdown", "Drawdown (% below running peak)", True),
           ("attribution", "P&L attribution", False), ("slippage", "Slippage (bps, positive = worse)", False),
           ("latency", "Latency percentiles", True)]


# -- data for the charts ---------------------------------------------------------------

def minmax_indices(values: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Sorted indices of at most `max_points` values: per bucket the min and the max (plus the
    first and last value), so that a dip or a spike survives downsampling."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    buckets = (max_points - 2) // 2
    size = -(-n // buckets)
    pad = buckets * size - n
    lo = np.concatenate([values, np.full(pad, np.inf)]).reshape(buckets, size)
    hi = np.concatenate([values, np.full(pad, -np.inf)]).reshape(buckets, size)
    starts = np.arange(buckets) * size
    idx = np.concatenate([[0, n - 1], starts + lo.argmin(axis=1), starts + hi.argmax(axis=1)])
    return np.unique(idx[idx < n])


def _equity_data(equity: pd.DataFrame | None) -> tuple[dict, dict, list[tuple[str, str]]]:
    empty = {"t": [], "v": []}
    if equity is None or len(equity) == 0:
        return empty, empty, []
    ts = pd.to_datetime(equity["timestamp"], utc=True).dt.tz_convert(None)
    t = ts.to_numpy("datetime64[ms]").astype("int64")
    v = equity["equity"].to_numpy("float64")
    ok = np.isfinite(v) & (t != np.iinfo("int64").min)
    t, v = t[ok], v[ok]
    if len(v) == 0:
        return empty, empty, []
    peak = np.maximum.accumulate(v)
    dd = np.where(peak > 0, v / np.where(peak > 0, peak, 1.0) - 1.0, 0.0) * 100.0
    ie, idd = minmax_indices(v), minmax_indices(dd)
    ret = v[-1] / v[0] - 1 if v[0] else math.nan
    summary = [("Final equity", _fmt("equity", float(v[-1]))), ("Return", f"{ret:.2%}"),
               ("Max drawdown", f"{-dd.min() / 100:.2%}"),
               ("Period", f"{ts.iloc[0]:%Y-%m-%d %H:%M} → {ts.iloc[-1]:%Y-%m-%d %H:%M} UTC")]
    return ({"t": t[ie].tolist(), "v": v[ie].tolist()},
            {"t": t[idd].tolist(), "v": np.round(dd[idd], 6).tolist()}, summary)


def _attribution(metrics: dict, fills: pd.DataFrame | None) -> dict:
    groups = [{"name": name, "items": items} for key, name in (("pnl_by_strategy", "P&L by strategy"),
                                                               ("pnl_by_asset", "P&L by asset"))
              if (items := _pairs(metrics.get(key)))]
    if groups or fills is None or len(fills) == 0:
        return {"groups": groups}
    notional = fills["quantity"].astype("float64") * fills["price"].astype("float64")
    sign = np.where(fills["side"].astype(str).str.lower() == "buy", -1.0, 1.0)
    flow = (sign * notional - fills["fee"].astype("float64")).groupby(fills["side"].astype(str)).sum()
    items = [[str(k), float(x)] for k, x in flow.items() if _num(x) is not None]
    return {"groups": [{"name": "Cash flow by side (from fills: ±notional − fees)", "items": items}] if items else []}


def _pairs(obj) -> list[list]:
    """(label, number) pairs from {label: number}, {label: {pnl: …}}, [{strategy: …, pnl: …}] or [[label, n]]."""
    if isinstance(obj, dict):
        items = list(obj.items())
    elif isinstance(obj, list | tuple):
        items = [(_label(r), r) if isinstance(r, dict) else tuple(r) for r in obj
                 if isinstance(r, dict) or (isinstance(r, list | tuple) and len(r) == 2)]
    else:
        return []
    out = []
    for label, val in items:
        num = next((_num(val[k]) for k in _PNL_KEYS if k in val and _num(val[k]) is not None), None) \
            if isinstance(val, dict) else _num(val)
        if num is not None:
            out.append([str(label), num])
    return out


def _label(row: dict) -> str:
    return str(next((row[k] for k in _LABEL_KEYS if k in row), next(iter(row.values()), "?")))


def _num(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, Real):
        return None
    return float(x) if math.isfinite(float(x)) else None


def _slippage(metrics: dict, fills: pd.DataFrame | None) -> dict:
    if fills is not None and "slippage_bps" in fills:
        x = pd.to_numeric(fills["slippage_bps"], errors="coerce").to_numpy("float64")
        return _histogram(x[np.isfinite(x)])
    for key, val in metrics.items():  # a histogram or raw values the metrics may carry
        if "slippage" in str(key) and isinstance(val, dict) and {"edges", "counts"} <= val.keys():
            edges, counts = [_num(x) for x in val["edges"]], [_num(x) for x in val["counts"]]
            if None not in edges + counts and len(edges) == len(counts) + 1:
                return {"edges": edges, "counts": counts}
        if "slippage" in str(key) and isinstance(val, list):
            return _histogram(np.array([v for v in val if _num(v) is not None], dtype="float64"))
    return {"edges": [], "counts": []}


def _histogram(x: np.ndarray) -> dict:
    if len(x) == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(x, bins=int(min(40, max(5, math.sqrt(len(x))))))
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _latency(metrics: dict) -> dict:
    families: dict[str, dict] = {}
    for key, val in metrics.items():
        if (m := _LATENCY.match(str(key))) and _num(val) is not None:
            families.setdefault(m["family"], {})[m["stat"]] = _num(val)
    return {"stats": list(_LATENCY_STATS),
            "families": [{"name": k.replace("_", " "), "values": v} for k, v in families.items()]}


# -- server-side tables ----------------------------------------------------------------

def _e(x) -> str:
    return escape(str(x), quote=True)


def _is_scalar(x) -> bool:
    return not isinstance(x, dict | list | tuple)


def _fmt(key: str, v) -> str:
    """A metric value for humans: fractions as %, bps, seconds, None/NaN as an em dash."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if not isinstance(v, Real):
        return str(v)
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if _PERCENT.match(key):
        return f"{v:.2%}"
    if "bps" in key:
        return f"{v:,.2f} bps"
    if re.search(r"_s(_|$)", key):
        return f"{v * 1e3:,.1f} ms" if abs(v) < 1 else f"{v:,.3f} s"
    if key.endswith("_days"):
        return f"{v:,.1f} d" if not isinstance(v, Integral) else f"{v:,} d"
    if isinstance(v, Integral):
        return f"{v:,}"
    return f"{v:,.2f}" if abs(v) >= 1000 else f"{v:,.4f}" if abs(v) >= 1 else f"{v:.6g}"


def _metrics_table(metrics: dict) -> str:
    rows = "".join(f'<tr data-metric="{_e(k)}"><th>{_e(k)}</th><td>{_e(_fmt(str(k), v))}</td></tr>'
                   for k, v in metrics.items() if _is_scalar(v))
    return f'<table class="metrics"><tbody>{rows}</tbody></table>' if rows else "<p>No metrics.</p>"


def _nested_tables(metrics: dict) -> str:
    """Every list/dict metric as a small table (at most MAX_TABLE_ROWS rows each)."""
    out = []
    for key, val in metrics.items():
        if _is_scalar(val):
            continue
        if isinstance(val, dict):
            rows = [{"key": k, **v} if isinstance(v, dict) else {"key": k, "value": v} for k, v in val.items()]
        else:
            rows = [r if isinstance(r, dict) else {"value": r} for r in val]
        cols = list(dict.fromkeys(c for r in rows[:MAX_TABLE_ROWS] for c in r))
        head = "".join(f"<th>{_e(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(str(c), r.get(c)))}</td>" for c in cols) + "</tr>"
                       for r in rows[:MAX_TABLE_ROWS])
        more = f"<p>… and {len(rows) - MAX_TABLE_ROWS:,} more rows</p>" if len(rows) > MAX_TABLE_ROWS else ""
        out.append(f'<h3>{_e(key)}</h3><table class="nested" data-metric="{_e(key)}"><thead><tr>{head}</tr>'
                   f"</thead><tbody>{body}</tbody></table>{more}")
    return "".join(out)


# -- the page --------------------------------------------------------------------------

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body>{body}
<script type="application/json" id="report-data">{data}</script>
<script>{js}</script>
</body></html>
"""

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;background:#f5f7fa;margin:0}
header{padding:16px 24px;background:#fff;border-bottom:1px solid #e4e7eb;display:flex;flex-wrap:wrap;
gap:12px;align-items:center}
h1{font-size:20px;margin:0 24px 0 0;width:100%}h2{font-size:15px;margin:0 0 8px}h3{font-size:13px;margin:16px 0 4px}
.card{background:#f5f7fa;border-radius:6px;padding:6px 12px}.card span{display:block;font-size:11px;color:#616e7c}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:16px;padding:16px 24px}
section{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:12px 16px;min-width:0}
.wide,.table{grid-column:1/-1}svg{width:100%;display:block}
svg text{font-size:11px;fill:#52606d}.grid{stroke:#e4e7eb}.axis{stroke:#9aa5b1}.empty{font-size:14px;fill:#9aa5b1}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 12px 3px 0;text-align:left;border-bottom:1px solid #f0f2f5}
.cols{display:flex;flex-wrap:wrap;gap:8px 48px;align-items:flex-start}h3:first-child{margin-top:0}
th{font-weight:500;color:#52606d;font-family:ui-monospace,monospace}td{font-variant-numeric:tabular-nums}
"""

_JS = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var NS = document.querySelector("svg").namespaceURI;
  var POS = "#2f7ed8", NEG = "#d64545", SERIES = ["#2f7ed8", "#7b61c9", "#e08a2c", "#d64545"];

  function add(p, name, attrs, text) {
    var n = document.createElementNS(NS, name);
    for (var k in attrs) n.setAttribute(k, attrs[k]);
    if (text !== undefined) n.textContent = text;
    return p.appendChild(n);
  }
  function frame(box, h, left) {
    var svg = box.querySelector("svg");
    svg.textContent = "";
    var w = Math.max(320, Math.round(svg.getBoundingClientRect().width || 800));
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("height", h);
    return {svg: svg, w: w, h: h, l: left || 72, r: 16, t: 12, b: 28};
  }
  function done(box, marks) {
    box.setAttribute("data-drawn", marks > 0 ? "true" : "empty");
    box.setAttribute("data-points", String(marks));
  }
  function empty(box) {
    var f = frame(box, 80);
    add(f.svg, "text", {x: f.w / 2, y: 45, "text-anchor": "middle", "class": "empty"}, "no data");
    done(box, 0);
  }
  function extent(v) {
    var lo = Infinity, hi = -Infinity;
    for (var i = 0; i < v.length; i++) { if (v[i] < lo) lo = v[i]; if (v[i] > hi) hi = v[i]; }
    if (hi === lo) { var d = Math.abs(lo) * 0.01 || 1; lo -= d; hi += d; }
    return [lo, hi];
  }
  function ticks(lo, hi, n) {
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n))), e = (hi - lo) / n / step;
    step *= e >= 7.5 ? 10 : e >= 3.5 ? 5 : e >= 1.5 ? 2 : 1;
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toPrecision(12));
    return out;
  }
  function num(v) {
    var a = Math.abs(v);
    return v.toLocaleString("en-US", {maximumFractionDigits: a >= 100 ? 0 : a >= 1 ? 2 : 6});
  }
  function yAxis(f, lo, hi, fmt) {
    var y = function (v) { return f.t + (hi - v) / (hi - lo) * (f.h - f.t - f.b); };
    ticks(lo, hi, 4).forEach(function (v) {
      add(f.svg, "line", {x1: f.l, x2: f.w - f.r, y1: y(v), y2: y(v), "class": "grid"});
      add(f.svg, "text", {x: f.l - 6, y: y(v) + 4, "text-anchor": "end"}, fmt(v));
    });
    return y;
  }
  function timeAxis(f, t0, t1) {
    var x = function (t) { return f.l + (t - t0) / ((t1 - t0) || 1) * (f.w - f.l - f.r); };
    var n = Math.max(2, Math.floor((f.w - f.l) / 150)), days = (t1 - t0) / n >= 864e5;
    add(f.svg, "line", {x1: f.l, x2: f.w - f.r, y1: f.h - f.b, y2: f.h - f.b, "class": "axis"});
    for (var i = 0; i <= n; i++) {
      var t = t0 + (t1 - t0) * i / n, s = new Date(t).toISOString();
      add(f.svg, "text", {x: x(t), y: f.h - 8, "text-anchor": i === 0 ? "start" : i === n ? "end" : "middle"},
          days ? s.slice(0, 10) : s.slice(5, 10) + " " + s.slice(11, 16));
    }
    return x;
  }
  function line(box, s, area, color, fmt) {
    if (!s.t.length) return empty(box);
    var f = frame(box, 260), e = extent(s.v);
    if (area) e[1] = Math.max(e[1], 0); else { var pad = (e[1] - e[0]) * 0.05; e = [e[0] - pad, e[1] + pad]; }
    var y = yAxis(f, e[0], e[1], fmt), x = timeAxis(f, s.t[0], s.t[s.t.length - 1]);
    var d = "";
    for (var i = 0; i < s.t.length; i++) d += (i ? "L" : "M") + x(s.t[i]).toFixed(1) + "," + y(s.v[i]).toFixed(1);
    if (area) {
      add(f.svg, "path", {d: d + "L" + x(s.t[s.t.length - 1]).toFixed(1) + "," + y(0) + "L" + f.l + "," + y(0) + "Z",
                          fill: color, "fill-opacity": 0.15, stroke: "none"});
    }
    add(f.svg, "path", {d: d, fill: "none", stroke: color, "stroke-width": 1.5, "stroke-linejoin": "round"});
    done(box, s.t.length);
  }
  function attribution(box, a) {
    var rows = [];
    a.groups.forEach(function (g) { rows.push({head: g.name}); g.items.forEach(function (it) { rows.push(it); }); });
    if (!rows.length) return empty(box);
    var f = frame(box, rows.length * 22 + 40, 170), lo = 0, hi = 0, marks = 0;
    rows.forEach(function (r) { if (!r.head) { lo = Math.min(lo, r[1]); hi = Math.max(hi, r[1]); } });
    if (lo === hi) hi = 1;
    var x = function (v) { return f.l + (v - lo) / (hi - lo) * (f.w - f.l - f.r - 70); };
    rows.forEach(function (r, i) {
      var yy = f.t + i * 22;
      if (r.head) return add(f.svg, "text", {x: 0, y: yy + 15, "font-weight": 600}, r.head);
      var lab = r[0].length > 26 ? r[0].slice(0, 25) + "…" : r[0];
      add(f.svg, "text", {x: f.l - 8, y: yy + 15, "text-anchor": "end"}, lab);
      var x0 = x(Math.min(0, r[1])), w = Math.max(1, Math.abs(x(r[1]) - x(0)));
      var rect = add(f.svg, "rect", {x: x0, y: yy + 4, width: w, height: 14, fill: r[1] < 0 ? NEG : POS});
      add(rect, "title", {}, r[0] + ": " + num(r[1]));
      add(f.svg, "text", {x: x0 + w + 4, y: yy + 15}, num(r[1]));
      marks++;
    });
    add(f.svg, "line", {x1: x(0), x2: x(0), y1: f.t, y2: f.h - 20, "class": "axis"});
    done(box, marks);
  }
  function histogram(box, hst) {
    if (!hst.counts.length) return empty(box);
    var f = frame(box, 240), e = hst.edges, lo = e[0], hi = e[e.length - 1], marks = 0;
    var y = yAxis(f, 0, Math.max.apply(null, hst.counts) || 1, num);
    var x = function (v) { return f.l + (v - lo) / ((hi - lo) || 1) * (f.w - f.l - f.r); };
    hst.counts.forEach(function (c, i) {
      if (!c) return;
      var r = add(f.svg, "rect", {x: x(e[i]) + 0.5, y: y(c), width: Math.max(1, x(e[i + 1]) - x(e[i]) - 1),
                                  height: y(0) - y(c), fill: POS});
      add(r, "title", {}, num(e[i]) + " … " + num(e[i + 1]) + " bps: " + c);
      marks++;
    });
    add(f.svg, "line", {x1: f.l, x2: f.w - f.r, y1: y(0), y2: y(0), "class": "axis"});
    ticks(lo, hi, 5).forEach(function (v) {
      add(f.svg, "text", {x: x(v), y: f.h - 8, "text-anchor": "middle"}, num(v));
    });
    done(box, marks);
  }
  function latency(box, lat) {
    if (!lat.families.length) return empty(box);
    var f = frame(box, 260), hi = 0, marks = 0;
    f.t = 28;
    lat.families.forEach(function (g) { lat.stats.forEach(function (s) { hi = Math.max(hi, g.values[s] || 0); }); });
    var ms = hi < 1, fmt = function (v) { return ms ? num(v * 1e3) + " ms" : num(v) + " s"; };
    var y = yAxis(f, 0, hi || 1, fmt), gw = (f.w - f.l - f.r) / lat.families.length, bw = gw * 0.8 / lat.stats.length;
    lat.families.forEach(function (g, i) {
      lat.stats.forEach(function (s, j) {
        if (g.values[s] === undefined) return;
        var r = add(f.svg, "rect", {x: f.l + i * gw + gw * 0.1 + j * bw, y: y(g.values[s]), width: bw - 2,
                                    height: y(0) - y(g.values[s]), fill: SERIES[j % SERIES.length]});
        add(r, "title", {}, g.name + " " + s + ": " + fmt(g.values[s]));
        marks++;
      });
      add(f.svg, "text", {x: f.l + (i + 0.5) * gw, y: f.h - 8, "text-anchor": "middle"}, g.name);
    });
    lat.stats.forEach(function (s, j) {
      add(f.svg, "rect", {x: f.w - f.r - 240 + j * 60, y: 2, width: 10, height: 10, fill: SERIES[j]});
      add(f.svg, "text", {x: f.w - f.r - 226 + j * 60, y: 11}, s);
    });
    add(f.svg, "line", {x1: f.l, x2: f.w - f.r, y1: y(0), y2: y(0), "class": "axis"});
    done(box, marks);
  }

  var draw = {
    equity: function (b) { line(b, D.equity, false, POS, num); },
    drawdown: function (b) { line(b, D.drawdown, true, NEG, function (v) { return num(v) + "%"; }); },
    attribution: function (b) { attribution(b, D.attribution); },
    slippage: function (b) { histogram(b, D.slippage); },
    latency: function (b) { latency(b, D.latency); }
  };
  function drawAll() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-chart]"), function (box) {
      try { draw[box.getAttribute("data-chart")](box); } catch (err) {
        box.setAttribute("data-drawn", "error");
        box.setAttribute("data-error", String(err));
      }
    });
  }
  drawAll();
  var pending;
  window.addEventListener("resize", function () { clearTimeout(pending); pending = setTimeout(drawAll, 150); });
})();
"""
