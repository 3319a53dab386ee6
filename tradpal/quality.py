"""Data-quality gates: Great Expectations suites over market data and executions.

Two suites, each run by a real GX validation on an ephemeral (in-memory) context:

- ``market_data`` (`check_market_data`): bar timestamps unique and strictly increasing,
  ``high >= open``, ``high >= close``, ``low <= open``, ``low <= close``, ``volume >= 0``, and
  no gap between two bars longer than ``max_gap_multiple`` x the timeframe;
- ``executions`` (`check_executions`): fill quantity > 0, fee >= 0, every fill's order exists,
  and (given the bars) every fill price within its bar's [low, high].

Each returns a `QualityResult`; `QualityResult.raise_for_failure` raises `QualityGateError`
for a run to stop on. Checks that compare rows with rows (gaps, order existence, price within
the bar) are derived columns of the validated frame (``gap_ratio``, ``order_known``,
``price_in_bar``) checked by ordinary expectations, so that GX reports them like any other.

``import great_expectations`` costs seconds (DESIGN.md, "Prefect facts"), so this module
imports it only inside the checks: importing ``tradpal.quality`` stays cheap and the live path
never pays for it. GX's usage statistics are turned off, its progress bars hidden, and nothing
is written anywhere except Data Docs into the folder given as ``data_docs_dir``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "EXECUTIONS",
    "MARKET_DATA",
    "QualityGateError",
    "QualityResult",
    "check_executions",
    "check_market_data",
]

MARKET_DATA = "market_data"
EXECUTIONS = "executions"
OHLCV = ["timestamp", "open", "high", "low", "close", "volume"]
FILL_COLUMNS = ["order_pk", "quantity", "price", "fee", "timestamp"]
FILL_CONTEXT = ["id", "trade_id", "symbol", "side"]  # kept in reported rows when present
EXAMPLES = 5  # unexpected values / rows kept per failed expectation
ALWAYS, ON_FAILURE = "always", "on-failure"
DATA_DOCS = (ALWAYS, ON_FAILURE)  # when a check given a Data Docs folder builds its site


@dataclass(frozen=True)
class QualityResult:
    """The outcome of one suite on one frame.

    ``failed`` has one dict per failed expectation: ``expectation`` (GX type), ``columns``,
    ``description``, ``unexpected_count``, ``unexpected_percent``, ``unexpected_values`` and
    ``unexpected_rows`` (a few of each; a row carries ``row``, its 0-based position in the
    checked frame, and the relevant columns; JSON-safe values), and ``exception`` when GX
    could not evaluate the expectation."""

    suite: str
    success: bool
    evaluated: int
    failed: list[dict]
    summary: str
    data_docs: str | None = None

    def raise_for_failure(self) -> QualityResult:
        """Raise `QualityGateError` if the suite failed; return self otherwise."""
        if not self.success:
            raise QualityGateError(self)
        return self

    def to_markdown(self) -> str:
        """A markdown report (for a Prefect artifact): status, one table row per failure,
        examples, and the Data Docs path when built."""
        status = "passed" if self.success else "**FAILED**"
        lines = [f"## Data quality: `{self.suite}` {status}", "",
                 f"{self.evaluated - len(self.failed)} of {self.evaluated} expectations met."]
        if self.failed:
            lines += ["", "| expectation | column(s) | unexpected | examples |", "|---|---|---|---|"]
            for f in self.failed:
                examples = f["unexpected_rows"] or f["unexpected_values"]
                shown = "; ".join(_md_cell(e) for e in examples[:3])
                lines.append(f"| {_md_cell(f['description'])} (`{f['expectation']}`) | "
                             f"{', '.join(f['columns'])} | {_count(f)} | {shown} |")
        if self.data_docs:
            lines += ["", f"Data Docs: `{self.data_docs}`"]
        return "\n".join(lines) + "\n"


class QualityGateError(Exception):
    """A data-quality suite failed: stop the run and look at ``result`` (its ``summary``,
    ``failed`` rows and, if built, Data Docs). The data, not the code, needs fixing."""

    def __init__(self, result: QualityResult) -> None:
        self.result = result
        first = result.failed[0] if result.failed else None
        what = (f"{first['description']} ({first['expectation']} on {', '.join(first['columns'])}): "
                f"{_count(first)}" if first else "no failure recorded")
        more = f" (+{len(result.failed) - 1} more failed)" if len(result.failed) > 1 else ""
        super().__init__(f"quality gate '{result.suite}' failed: {what}{more}")


# -- the suites ------------------------------------------------------------------------

def check_market_data(bars: pd.DataFrame, *, timeframe: pd.Timedelta | None = None,
                      max_gap_multiple: float = 10.0,
                      data_docs_dir: str | Path | None = None, data_docs: str = ALWAYS) -> QualityResult:
    """Suite ``market_data`` over OHLCV bars (columns timestamp, open, high, low, close, volume),
    e.g. as `tradpal.io.load_ohlcv` returns them.

    ``timeframe`` defaults to the median spacing of consecutive bars (the positive spacings);
    a gap is flagged when two consecutive bars are more than ``max_gap_multiple`` timeframes
    apart (derived column ``gap_ratio`` = spacing / timeframe). Raises ValueError for a missing
    column or a non-positive timeframe/multiple.

    ``data_docs_dir``: build GX Data Docs (a static site) there and return its index.html in
    ``data_docs``; ``data_docs`` ``"on-failure"`` builds them only when the suite fails (a
    passing suite's site repeats the result's summary, and costs ~0.3 s over 1 M bars). Each
    build replaces the site in that folder: give each check its own."""
    _require(bars, OHLCV, "bars")
    if not max_gap_multiple > 0:
        raise ValueError(f"max_gap_multiple must be > 0, got {max_gap_multiple!r}")
    with pd.option_context("mode.copy_on_write", True):  # no 1 M-row copies: bars stay as they are
        frame = bars[OHLCV].reset_index(drop=True)
        ts = frame["timestamp"]  # as `tradpal.io.load_ohlcv` gives them: no 1 M-row conversion
        if not isinstance(ts.dtype, pd.DatetimeTZDtype) or str(ts.dtype.tz) != "UTC":
            ts = pd.to_datetime(ts, utc=True)
        spacing = ts.diff()
        tf = _timeframe(spacing, timeframe)
        frame["previous_timestamp"] = frame["timestamp"].shift(1)
        frame["gap_ratio"] = spacing / tf if tf is not None else np.nan
    limit = f"{max_gap_multiple:g} x {_duration(tf)}" if tf is not None else "(no timeframe: fewer than 2 bars)"
    expectations: list[tuple[str, dict[str, Any], str]] = [
        ("ExpectColumnValuesToBeUnique", {"column": "timestamp"}, "bar timestamps are unique"),
        ("ExpectColumnValuesToBeIncreasing", {"column": "timestamp", "strictly": True},
         "bar timestamps strictly increase"),
        *(("ExpectColumnPairValuesAToBeGreaterThanB", {"column_A": a, "column_B": b, "or_equal": True}, what)
          for a, b, what in (("high", "open", "high >= open"), ("high", "close", "high >= close"),
                             ("open", "low", "low <= open"), ("close", "low", "low <= close"))),
        ("ExpectColumnValuesToBeBetween", {"column": "volume", "min_value": 0}, "volume >= 0"),
        ("ExpectColumnValuesToBeBetween", {"column": "gap_ratio", "max_value": float(max_gap_multiple)},
         f"no gap between consecutive bars longer than {limit}"),
    ]
    return _validate(MARKET_DATA, frame, expectations, context=["timestamp"], data_docs_dir=data_docs_dir,
                     extra={"gap_ratio": ["previous_timestamp"]}, data_docs=data_docs)


def check_executions(fills: pd.DataFrame, orders: pd.DataFrame, *, bars: pd.DataFrame | None = None,
                     price_tolerance_bps: float = 0.0,
                     data_docs_dir: str | Path | None = None) -> QualityResult:
    """Suite ``executions`` over ledger fills (columns order_pk, quantity, price, fee,
    timestamp) and orders (column id), as `Ledger.frame("fills"/"orders", run_id=...)` gives.

    Fill quantity > 0, fee >= 0, every fill's order_pk an order id (derived ``order_known``);
    with ``bars`` (paper fills: a fill is stamped with its bar's timestamp), every fill price
    within the [low, high] of the bar with the same timestamp (derived ``price_in_bar``; a fill
    with no such bar fails). ``price_tolerance_bps`` widens that range (low x (1 - tol),
    high x (1 + tol)): pass the replay's slippage, which may move a fill outside its bar.
    ``data_docs_dir`` as in `check_market_data`."""
    _require(fills, FILL_COLUMNS, "fills")
    _require(orders, ["id"], "orders")
    keep = [c for c in FILL_CONTEXT if c in fills.columns] + FILL_COLUMNS
    frame = fills[keep].reset_index(drop=True)
    frame["order_known"] = frame["order_pk"].isin(orders["id"]).astype(bool)
    expectations: list[tuple[str, dict[str, Any], str]] = [
        ("ExpectColumnValuesToBeBetween", {"column": "quantity", "min_value": 0, "strict_min": True},
         "fill quantity > 0"),
        ("ExpectColumnValuesToBeBetween", {"column": "fee", "min_value": 0}, "fill fee >= 0"),
        ("ExpectColumnValuesToBeInSet", {"column": "order_known", "value_set": [True]},
         "every fill's order_pk is a known order id"),
    ]
    context = [c for c in ("id", "trade_id", "order_pk", "timestamp") if c in frame.columns]
    if bars is not None:
        _require(bars, ["timestamp", "low", "high"], "bars")
        _add_bar_range(frame, bars, price_tolerance_bps)
        within = "within its bar's [low, high]" + (
            f" +/- {price_tolerance_bps:g} bps" if price_tolerance_bps else "")
        expectations.append(("ExpectColumnValuesToBeInSet", {"column": "price_in_bar", "value_set": [True]},
                             f"fill price {within}"))
    return _validate(EXECUTIONS, frame, expectations, context=context, data_docs_dir=data_docs_dir,
                     extra={"order_known": ["order_pk"], "price_in_bar": ["price", "bar_low", "bar_high"]})


# -- derived columns -----------------------------------------------------------------

def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; it has {list(frame.columns)}")


def _timeframe(spacing: pd.Series, given: pd.Timedelta | None) -> pd.Timedelta | None:
    if given is not None:
        tf = pd.Timedelta(given)
        if tf <= pd.Timedelta(0):
            raise ValueError(f"timeframe must be > 0, got {given!r}")
        return tf
    values = spacing.to_numpy()  # timedelta64, NaT first: in integer units NaT is negative
    units = values.view("i8")
    positive = units[units > 0]  # numpy's median: pandas' takes ~0.1 s over 1 M bars, this ~5 ms
    return pd.Timedelta(np.median(positive), unit=np.datetime_data(values.dtype)[0]) if len(positive) else None


def _duration(tf: pd.Timedelta) -> str:
    """``5min``, ``1h``, ``1d``, ... (``str(tf)`` when no whole unit fits)."""
    for unit, ns in (("d", 86_400 * 10**9), ("h", 3_600 * 10**9), ("min", 60 * 10**9), ("s", 10**9), ("ms", 10**6)):
        if tf.value % ns == 0:
            return f"{tf.value // ns}{unit}"
    return str(tf)


def _add_bar_range(frame: pd.DataFrame, bars: pd.DataFrame, tolerance_bps: float) -> None:
    """``bar_low``/``bar_high`` of the bar with each fill's timestamp (NaN if none) and
    ``price_in_bar``."""
    key = pd.to_datetime(bars["timestamp"], utc=True)
    by_ts = pd.DataFrame({"low": bars["low"].to_numpy("float64"), "high": bars["high"].to_numpy("float64")},
                         index=pd.DatetimeIndex(key))
    by_ts = by_ts[~by_ts.index.duplicated(keep="first")]
    at = by_ts.reindex(pd.DatetimeIndex(pd.to_datetime(frame["timestamp"], utc=True)))
    frame["bar_low"] = at["low"].to_numpy()
    frame["bar_high"] = at["high"].to_numpy()
    tol = tolerance_bps / 1e4
    price = frame["price"].to_numpy("float64")
    inside = (price >= frame["bar_low"].to_numpy() * (1 - tol)) & (price <= frame["bar_high"].to_numpy() * (1 + tol))
    frame["price_in_bar"] = inside  # NaN bounds (no bar) compare False


# -- running GX ------------------------------------------------------------------------

def _gx() -> Any:
    """``great_expectations``, imported on first use with usage statistics off and its
    logger at WARNING unless the application configured it."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    with warnings.catch_warnings():  # its own imports' DeprecationWarnings (sre_constants, ...)
        warnings.simplefilter("ignore", DeprecationWarning)
        import great_expectations as gx

    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:
        gx_logger.setLevel(logging.WARNING)
    return gx


_fingerprint_lock = threading.Lock()
_fingerprint_off = 0  # validations running now without the fingerprint
_fingerprint_threshold: Any = None  # GX's own threshold, put back when the last one ends


@contextmanager
def _no_fingerprint() -> Iterator[None]:
    """GX's pandas engine without its batch fingerprint while the block runs: for any frame
    under ``HASH_THRESHOLD`` bytes (1e9) it hashes every row (``hash_pandas_object``, then
    md5) only to put ``pandas_data_fingerprint`` among the result's batch markers, which
    nothing here reads: ~0.1 s of the market-data gate's ~0.4 s over 1 M bars. The
    threshold is a module global of GX's; it is set to 0 while at least one of our
    validations runs (counted, so threads overlapping put it back once) and restored after.
    A GX version without it is left as it is."""
    global _fingerprint_off, _fingerprint_threshold
    from great_expectations.execution_engine import pandas_execution_engine as engine

    if not hasattr(engine, "HASH_THRESHOLD"):
        yield
        return
    with _fingerprint_lock:
        if _fingerprint_off == 0:
            _fingerprint_threshold = engine.HASH_THRESHOLD
        _fingerprint_off += 1
        engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        with _fingerprint_lock:
            _fingerprint_off -= 1
            if _fingerprint_off == 0:
                engine.HASH_THRESHOLD = _fingerprint_threshold


def _context(gx: Any) -> Any:
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _validate(suite_name: str, frame: pd.DataFrame, expectations: list[tuple[str, dict[str, Any], str]], *,
              context: list[str], data_docs_dir: str | Path | None,
              extra: dict[str, list[str]] | None = None, data_docs: str = ALWAYS) -> QualityResult:
    """Run the suite. Unless a site of a passing run is wanted, a first run asks GX only
    whether each expectation holds (``BOOLEAN_ONLY``: no unexpected values gathered, ~0.1 s
    less over 1 M bars); only a failing suite is run again for its details (and its site)."""
    if data_docs not in DATA_DOCS:
        raise ValueError(f"data_docs must be one of {DATA_DOCS}, got {data_docs!r}")
    if data_docs_dir is None or data_docs == ON_FAILURE:
        outcome, _ = _run_suite(suite_name, frame, expectations, "BOOLEAN_ONLY", None)
        if outcome.success:
            return QualityResult(suite=suite_name, success=True,
                                 evaluated=int(outcome.statistics["evaluated_expectations"]), failed=[],
                                 summary=_summary(suite_name, outcome, [], len(frame)))
    outcome, docs = _run_suite(suite_name, frame, expectations, "SUMMARY", data_docs_dir)
    failed = [_failure(r, frame, context, extra or {}) for r in outcome.results if not r.success]
    return QualityResult(
        suite=suite_name,
        success=bool(outcome.success),
        evaluated=int(outcome.statistics["evaluated_expectations"]),
        failed=failed,
        summary=_summary(suite_name, outcome, failed, len(frame)),
        data_docs=docs,
    )


def _run_suite(suite_name: str, frame: pd.DataFrame, expectations: list[tuple[str, dict[str, Any], str]],
               result_format: str, data_docs_dir: str | Path | None) -> tuple[Any, str | None]:
    """One GX validation of ``frame`` on a fresh ephemeral context; its outcome, and the
    Data Docs index when ``data_docs_dir`` is given."""
    gx = _gx()
    ctx = _context(gx)
    source = f"tradpal_{suite_name}"
    batch = (ctx.data_sources.add_pandas(source)
             .add_dataframe_asset(suite_name)
             .add_batch_definition_whole_dataframe("whole_frame"))
    suite = ctx.suites.add(gx.ExpectationSuite(name=suite_name))
    for kind, kwargs, description in expectations:
        suite.add_expectation(getattr(gx.expectations, kind)(**kwargs, description=description))
    definition = ctx.validation_definitions.add(gx.ValidationDefinition(name=suite_name, data=batch, suite=suite))
    fmt = {"result_format": result_format, "partial_unexpected_count": EXAMPLES,
           "return_unexpected_index_query": False}
    try:
        # GX's dropna() per metric: lazy copies, not 1 M-row ones
        with pd.option_context("mode.copy_on_write", True), _no_fingerprint():
            outcome = definition.run(batch_parameters={"dataframe": frame}, result_format=fmt)
        docs = _build_docs(ctx, data_docs_dir) if data_docs_dir is not None else None
    finally:
        # GX keeps the last context alive (its project manager), and the context the frame:
        # let the frame go with the call.
        ctx.data_sources.delete(source)
    return outcome, docs


def _build_docs(ctx: Any, folder: str | Path) -> str:
    base = Path(folder).expanduser().resolve()
    ctx.add_data_docs_site("tradpal", {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(base)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    ctx.build_data_docs(site_names=["tradpal"])
    return str(base / "index.html")


def _columns(kwargs: dict[str, Any]) -> list[str]:
    return [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]


def _failure(r: Any, frame: pd.DataFrame, context: list[str], extra: dict[str, list[str]]) -> dict:
    config = r.expectation_config
    columns = _columns(config.kwargs)
    res = r.result or {}
    shown = [*context, *(c for col in columns for c in [col, *extra.get(col, [])])]
    shown = list(dict.fromkeys(c for c in shown if c in frame.columns))
    index = list(res.get("partial_unexpected_index_list") or [])[:EXAMPLES]
    rows = [{"row": int(i), **{c: _plain(frame.at[i, c]) for c in shown}} for i in index if i in frame.index]
    return {
        "expectation": config.type,
        "columns": columns,
        "description": config.description or config.type,
        "unexpected_count": res.get("unexpected_count"),
        "unexpected_percent": res.get("unexpected_percent"),
        "unexpected_values": [_plain(v) for v in (res.get("partial_unexpected_list") or [])[:EXAMPLES]],
        "unexpected_rows": rows,
        "exception": _exception(r.exception_info),
    }


def _exception(info: Any) -> str | None:
    """GX's error message for an expectation it could not evaluate (``exception_info`` is
    either one record or a dict of records per metric)."""
    records = [info] if isinstance(info, dict) and "raised_exception" in info else (
        list(info.values()) if isinstance(info, dict) else [])
    for rec in records:
        if isinstance(rec, dict) and rec.get("raised_exception"):
            return str(rec.get("exception_message") or "error").splitlines()[0]
    return None


def _summary(suite_name: str, outcome: Any, failed: list[dict], n_rows: int) -> str:
    """One line for the suite and one per failed expectation (GX's statistics, expectation
    kwargs and unexpected counts), then up to three unexpected rows of each."""
    stats = outcome.statistics
    lines = [f"{suite_name}: {'passed' if outcome.success else 'FAILED'}: {stats['successful_expectations']} "
             f"of {stats['evaluated_expectations']} expectations met on {n_rows:,} rows"]
    for r, f in zip((r for r in outcome.results if not r.success), failed, strict=True):
        config = r.expectation_config
        args = ", ".join(f"{k}={v!r}" for k, v in config.kwargs.items() if k != "batch_id")
        line = f"- {f['description']}: {config.type}({args})"
        if f["unexpected_count"] is not None:
            line += f": {f['unexpected_count']:,} unexpected ({f['unexpected_percent'] or 0:.3g}%)"
        elif f["exception"]:
            line += f": error: {f['exception']}"
        elif (r.result or {}).get("observed_value") is not None:
            line += f": observed {r.result['observed_value']!r}"
        lines.append(line)
        if f["unexpected_rows"]:
            lines += [f"    row {row['row']}: " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "row")
                      for row in f["unexpected_rows"][:3]]
        elif f["unexpected_values"]:
            lines.append("    e.g. " + ", ".join(map(str, f["unexpected_values"][:3])))
    return "\n".join(lines)


def _plain(v: Any) -> Any:
    """A JSON-safe scalar: timestamps as ISO strings, numpy scalars as Python, NaN as None."""
    if v is pd.NaT:
        return None
    if isinstance(v, pd.Timestamp | datetime):
        return v.isoformat()
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _count(f: dict) -> str:
    n = f.get("unexpected_count")
    if n is None:
        return f"error: {f['exception']}" if f.get("exception") else "failed"
    return f"{n:,} unexpected row{'s' if n != 1 else ''}"


def _md_cell(v: Any) -> str:
    if isinstance(v, dict):
        v = ", ".join(f"{k}={val}" for k, val in v.items())
    return str(v).replace("|", "\\|").replace("\n", " ")
