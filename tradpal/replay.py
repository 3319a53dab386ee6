"""Paper replay, as plain functions: check the inputs, plan the batches, build the
context, and summarise. The `paper_replay` flow calls these around its eight tasks.

The simulator's options (``ReplayParams``; defaults = the basic `next-open` contract,
output unchanged): ``fill_model`` (next-open | close | vwap-bar), ``slippage_model``
(fixed | volatility | sqrt-impact, with ``impact_k``), ``participation``, ``latency_ms``,
``venue`` (fee schedule), ``seed``, and ``markets`` (several symbols on one account).
The *advanced model* is a slippage model other than ``fixed``: it caps each bar at
``participation`` (default 10 %) of its volume and makes limit orders trade through.
See ``brokers/paper`` (broker, fills, slippage, venues) for the rules.

Multi-symbol (``markets``, two or more): one cash account in one quote currency, bars
merged on time, each signal routed by its ``symbol``; ``equity.csv`` marks every position
at its symbol's last close; ``fills.csv`` gains a last column ``symbol``; the summary
gains ``symbols`` and ``final_positions`` (``final_position`` is then null).

Determinism: every model is deterministic, so ``seed`` (accepted, recorded) changes
nothing today; the same inputs give byte-identical ``fills.csv`` and ``equity.csv``, and a
``summary.json`` that differs only in the run's identity (``run_id``, ``flow_run_id``).
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brokers.base.clock import SimulatedClock
from brokers.paper import PaperBroker
from brokers.paper.fills import FILL_MODELS
from brokers.paper.slippage import SLIPPAGE_MODELS, slippage_model
from brokers.paper.venues import FeeSchedule, fee_schedule
from tasks.context import Book, ExecutionContext, MarketData, PipelineConfig, SizingConfig
from tasks.positions import SEGMENT_COLUMNS
from tradpal.errors import InputError
from tradpal.io import load_ohlcv, load_signals

# Signals per batch by default. Each batch is eight task runs, and a task run costs ~5 ms in
# the flow's process and 20-40 ms of the Prefect API server's CPU (2-core machines, README
# "Benchmarks"): ~0.2-0.35 s per batch. A batch of 500 signals takes ~0.13 s through the eight
# steps, less than that; a batch of 2,500 ~0.65 s. The UI still shows every step of every
# batch, and a long replay reports progress per batch.
DEFAULT_BATCH = 2_500


@dataclass(frozen=True)
class ReplayParams:
    ohlcv: str
    signals: str
    symbol: str
    cash: float = 10_000.0
    fee_rate: float | None = None  # maker and taker; None: the venue's, or 0.001 without a venue
    slippage_bps: float = 0.0
    out: str | None = None
    chunk_signals: int | None = None  # default: DEFAULT_BATCH; 1 with a risk config (limits see every fill)
    risk_config: str | None = None
    fill_model: str = "next-open"
    slippage_model: str = "fixed"
    impact_k: float | None = None  # k of the volatility / sqrt-impact model (None: its default)
    participation: float | None = None  # cap per bar; None: 10 % (advanced model) or unlimited
    latency_ms: float = 0.0
    venue: str | None = None  # a fee schedule: binance, kraken, ... or custom:MAKER:TAKER
    seed: int | None = None  # for random components; every model is deterministic today
    markets: tuple[tuple[str, str], ...] = ()  # (symbol, file) pairs; replaces ohlcv + symbol

    @property
    def batch_size(self) -> int:
        if self.chunk_signals is not None:
            return self.chunk_signals
        return 1 if self.risk_config else DEFAULT_BATCH

    @property
    def feeds(self) -> tuple[tuple[str, str], ...]:
        """(symbol, OHLCV file) of every market replayed."""
        return tuple(self.markets) or ((self.symbol, self.ohlcv),)

    @property
    def multi(self) -> bool:
        return len(self.feeds) > 1

    @property
    def advanced(self) -> bool:
        """The advanced model: a slippage model other than fixed bps."""
        return self.slippage_model != "fixed"

    @property
    def fees(self) -> FeeSchedule:
        """Maker and taker fees: ``fee_rate`` for both if given, else the venue's."""
        if self.fee_rate is not None:
            return FeeSchedule(self.venue or "custom", self.fee_rate, self.fee_rate)
        return fee_schedule(self.venue) if self.venue else FeeSchedule("default", 0.001, 0.001)

    @property
    def max_participation(self) -> float | None:
        if self.participation is not None:
            return self.participation
        return 0.1 if self.advanced else None

    def check(self) -> None:
        for symbol, _ in self.feeds:
            if "/" not in symbol:
                flag = "--ohlcv" if self.markets else "--symbol"
                raise InputError(f"{flag}: expected BASE/QUOTE, got {symbol!r}")
        if not self.cash > 0:
            raise InputError(f"--cash: must be > 0, got {self.cash}")
        if self.fee_rate is not None and not 0 <= self.fee_rate < 1:
            raise InputError(f"--fee-rate: must be in [0, 1), got {self.fee_rate}")
        if not 0 <= self.slippage_bps < 10_000:
            raise InputError(f"--slippage-bps: must be in [0, 10000), got {self.slippage_bps}")
        if self.chunk_signals is not None and self.chunk_signals < 1:
            raise InputError(f"chunk_signals: must be >= 1, got {self.chunk_signals}")
        self._check_models()
        self._check_markets()

    def _check_models(self) -> None:
        if self.fill_model not in FILL_MODELS:
            raise InputError(f"--fill-model: expected one of {', '.join(FILL_MODELS)}, got {self.fill_model!r}")
        if self.slippage_model not in SLIPPAGE_MODELS:
            raise InputError(f"--slippage-model: expected one of {', '.join(SLIPPAGE_MODELS)}, "
                             f"got {self.slippage_model!r}")
        if self.slippage_bps and self.advanced:
            raise InputError(f"--slippage-bps: applies to --slippage-model fixed only, not {self.slippage_model}")
        if self.impact_k is not None and not self.advanced:
            raise InputError("--impact-k: needs --slippage-model volatility or sqrt-impact")
        if self.impact_k is not None and not 0 < self.impact_k < float("inf"):
            raise InputError(f"--impact-k: must be > 0, got {self.impact_k}")
        if self.participation is not None and not 0 < self.participation <= 1:
            raise InputError(f"--participation: must be in (0, 1], got {self.participation}")
        if not 0 <= self.latency_ms < float("inf"):
            raise InputError(f"--latency-ms: must be >= 0, got {self.latency_ms}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise InputError(f"--seed: must be an integer in [0, 2**63), got {self.seed}")
        if self.venue is not None:
            try:
                fee_schedule(self.venue)
            except ValueError as exc:
                raise InputError(f"--venue: {exc}") from None

    def _check_markets(self) -> None:
        symbols = [symbol for symbol, _ in self.feeds]
        repeated = sorted({s for s in symbols if symbols.count(s) > 1})
        if repeated:
            raise InputError(f"--ohlcv: symbol {repeated[0]} given more than once")
        quotes = sorted({quote_of(s) for s in symbols})
        if len(quotes) > 1:
            raise InputError(f"--ohlcv: every symbol must share one quote currency (one cash account), "
                             f"got {', '.join(quotes)}")


@dataclass
class ReplayInputs:
    bars: pd.DataFrame  # the (first) market's bars
    signals: pd.DataFrame
    risk: object = None  # risk.config.RiskConfig
    markets: dict[str, pd.DataFrame] | None = None  # every market's bars, by symbol (multi-symbol)

    def span(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """The first and the last bar time over every market."""
        frames = list(self.markets.values()) if self.markets else [self.bars]
        return (min(f["timestamp"].iloc[0] for f in frames), max(f["timestamp"].iloc[-1] for f in frames))


def bars_by_symbol(params: ReplayParams, inputs: ReplayInputs) -> dict[str, pd.DataFrame]:
    return inputs.markets if inputs.markets else {params.feeds[0][0]: inputs.bars}


def params_record(params: ReplayParams) -> dict:
    """The parameters as recorded (ledger, summary.json): the basic ones always, the
    simulator's options only when they differ from their defaults (so that a default
    replay's summary.json is unchanged)."""
    record = asdict(params)
    defaults = ReplayParams("", "", "")
    for key in ("fill_model", "slippage_model", "impact_k", "participation", "latency_ms", "venue", "seed",
                "markets"):
        if record[key] == getattr(defaults, key):
            del record[key]
    if "markets" in record:
        record["markets"] = dict(params.markets)
    if params.fee_rate is None and params.venue is None:
        record["fee_rate"] = params.fees.taker
    return record


def load_inputs(params: ReplayParams) -> ReplayInputs:
    """Load and check both files; raises `InputError` before anything is written."""
    from risk.config import load_risk_config

    params.check()
    risk = load_risk_config(params.risk_config) if params.risk_config else None
    markets = {symbol: load_ohlcv(path) for symbol, path in params.feeds}
    signals = load_signals(params.signals)
    signals["received_at"] = signals["timestamp"]  # in a replay a signal arrives at its own time
    return ReplayInputs(next(iter(markets.values())), signals, risk, markets if params.multi else None)


def quote_of(symbol: str) -> str:
    return symbol.split("/")[1].split(":")[0]


def build_context(params: ReplayParams, inputs: ReplayInputs, *, recorder, run_id: str) -> ExecutionContext:
    """Paper broker on a simulated clock; the broker enforces cash at fill time."""
    clock = SimulatedClock(start=inputs.span()[0] - pd.Timedelta(days=1))
    quote = quote_of(params.feeds[0][0])
    fees = params.fees
    broker = PaperBroker(cash=params.cash, quote_currency=quote, maker_fee=fees.maker, taker_fee=fees.taker,
                         slippage_bps=params.slippage_bps, clock=clock, name=f"paper:{run_id}",
                         slippage=slippage_model(params.slippage_model, bps=params.slippage_bps, k=params.impact_k),
                         fill_model=params.fill_model, latency_ms=params.latency_ms,
                         max_participation=params.max_participation, trade_through=params.advanced)
    markets = bars_by_symbol(params, inputs)
    for symbol, bars in markets.items():
        broker.add_market_data(symbol, bars)
    config = PipelineConfig(sizing=SizingConfig("signal"), check_balance=False, order_timeout_s=None,
                            max_price_deviation=1.0, risk=inputs.risk)
    ctx = ExecutionContext(broker=broker, clock=clock, config=config,
                           market=MarketData(markets),
                           book=Book(cash=params.cash, quote_currency=quote), recorder=recorder,
                           run_id=run_id, namespace=f"replay:{run_id}", strategy="replay")
    # a fresh simulator and a namespace of its own: no bracket leg or entry from before to take
    # over (monitoring's restart look-ups would only find this run's first batch)
    ctx.brackets_restored = True
    return ctx


@dataclass(frozen=True)
class Batch:
    signals: pd.DataFrame
    monitor_until: pd.Timestamp
    final: bool
    label: str


def plan_batches(inputs: ReplayInputs, chunk_signals: int) -> list[Batch]:
    """Batches of about ``chunk_signals`` signals (never splitting one timestamp). Each
    batch's monitoring advances the market to just before the next batch's first signal;
    the last one to the end of the data."""
    sig = inputs.signals
    ts = sig["timestamp"].to_numpy("datetime64[ns]")
    cuts = [0]
    while cuts[-1] + chunk_signals < len(sig):
        cut = cuts[-1] + chunk_signals
        cut = int(np.searchsorted(ts, ts[cut], side="left"))
        cut = cut if cut > cuts[-1] else int(np.searchsorted(ts, ts[cuts[-1]], side="right"))
        if cut >= len(sig):
            break
        cuts.append(cut)
    end = inputs.span()[1]
    batches = []
    for i, start in enumerate(cuts):
        stop = cuts[i + 1] if i + 1 < len(cuts) else len(sig)
        final = i + 1 == len(cuts)
        until = end if final else sig["timestamp"].iloc[stop] - pd.Timedelta(1, "ns")
        batches.append(Batch(sig.iloc[start:stop].reset_index(drop=True), max(until, end) if final else until,
                             final, f"batch {i + 1}/{len(cuts)}"))
    return batches


def equity_curve(ctx: ExecutionContext) -> pd.DataFrame:
    segs = [s for s in ctx.equity_segments if len(s)]
    if not segs:
        return pd.DataFrame(columns=SEGMENT_COLUMNS)
    return pd.concat(segs, ignore_index=True)


def max_drawdown(equity: np.ndarray) -> float:
    """max over t of 1 - equity_t / max(equity up to t), a positive fraction."""
    if len(equity) == 0:
        return 0.0
    peak = np.maximum.accumulate(equity)
    with np.errstate(invalid="ignore", divide="ignore"):
        dd = np.where(peak > 0, 1.0 - equity / peak, 0.0)
    return float(max(dd.max(), 0.0))


def iso_utc_array(stamps: pd.Series | pd.DatetimeIndex):
    """ISO-8601 UTC text (``YYYY-MM-DDTHH:MM:SSZ``) as an Arrow string array, made in
    Arrow: no Python string per value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pa.array(stamps.to_numpy("datetime64[ns]").astype("datetime64[s]"), type=pa.timestamp("s"))
    text = pc.replace_substring(pc.cast(values, pa.string()), " ", "T")  # cast is ~30x faster than strftime
    return pc.binary_join_element_wise(text, "Z", "")


def iso_utc(stamps: pd.Series):
    """ISO-8601 UTC strings (``YYYY-MM-DDTHH:MM:SSZ``), vectorised in Arrow, as a numpy array."""
    return iso_utc_array(stamps).to_numpy(zero_copy_only=False)


def fills_table(reports: pd.DataFrame, with_symbol: bool = False) -> pd.DataFrame:
    """fills.csv's rows; ``with_symbol`` (multi-symbol replays) adds a last column ``symbol``."""
    fills = reports[reports["quantity"] > 0]
    table = pd.DataFrame({
        "timestamp": iso_utc(fills["timestamp"]),
        "signal_id": fills["signal_id"].astype(str), "side": fills["side"].astype(str),
        "quantity": fills["quantity"].astype("float64"), "price": fills["price"].astype("float64"),
        "fee": fills["fee"].astype("float64"),
    })
    if with_symbol:
        table["symbol"] = fills["symbol"].astype(str).to_numpy()
    return table


def summarize(params: ReplayParams, inputs: ReplayInputs, ctx: ExecutionContext, reports: pd.DataFrame,
              curve: pd.DataFrame | None = None) -> dict:
    """The replay's summary (``curve``: the equity curve, if built already)."""
    book = ctx.book
    symbol = params.feeds[0][0]
    last_close = float(inputs.bars["close"].iloc[-1])
    position = float(book.positions.get(symbol, 0.0))
    curve = equity_curve(ctx) if curve is None else curve
    fills = reports[reports["quantity"] > 0]
    entries = reports["client_order_id"].str.endswith("-0")  # not bracket legs (a cancelled leg is no signal unfilled)
    unfilled = int(((reports["exec_type"] == "CANCELED") & (reports["quantity"] == 0) & entries).sum())
    rejected = int(sum(v for k, v in ctx.counts.items() if k.endswith(".rejected")))
    summary = {
        "symbol": symbol,
        "bars": len(inputs.bars),
        "signals": len(inputs.signals),
        "n_fills": len(fills),
        "rejected": rejected,
        "unfilled": unfilled,
        "total_fees": float(fills["fee"].sum()),
        "realized_pnl": float(book.realized_pnl),
        "unrealized_pnl": position * last_close - float(book.cost_basis.get(symbol, 0.0)),
        "initial_cash": params.cash,
        "final_cash": float(book.cash),
        "final_position": position,
        "final_equity": float(book.cash + position * last_close),
        "max_drawdown": max_drawdown(curve["equity"].to_numpy("float64")),
        "breaches": ctx.breaches,
        "halted": any(b["rule"] in ("max_drawdown", "max_daily_loss", "loss_limit") for b in ctx.breaches),
        "quote_currency": book.quote_currency,
        "params": params_record(params),
    }
    if params.multi:
        summary.update(_multi_summary(inputs.markets or {}, book))
    if params.venue is not None:
        fees = params.fees
        summary["fees"] = {"venue": fees.venue, "maker": fees.maker, "taker": fees.taker}
    return summary


def _multi_summary(markets: dict[str, pd.DataFrame], book: Book) -> dict:
    """The per-symbol part of a multi-symbol summary: positions marked at each symbol's last close."""
    last = {s: float(bars["close"].iloc[-1]) for s, bars in markets.items()}
    held = {s: float(book.positions.get(s, 0.0)) for s in markets}
    return {
        "symbol": ",".join(markets),
        "symbols": list(markets),
        "bars": int(sum(len(bars) for bars in markets.values())),
        "final_position": None,
        "final_positions": held,
        "last_close": last,
        "unrealized_pnl": sum(held[s] * last[s] - float(book.cost_basis.get(s, 0.0)) for s in markets),
        "final_equity": float(book.cash + sum(held[s] * last[s] for s in markets)),
    }


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then rename: no half files."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def numeric_table(frame: pd.DataFrame):
    """``frame`` (a ``timestamp`` column, then numbers) as an Arrow table for a CSV: the
    timestamps as ISO-8601 UTC text (`iso_utc_array`) unless they are text already."""
    import pyarrow as pa

    columns = {}
    for name in frame.columns:
        col = frame[name]
        if name == "timestamp" and pd.api.types.is_datetime64_any_dtype(col):
            columns[name] = iso_utc_array(col)
        elif name == "timestamp":
            columns[name] = pa.array(col.to_numpy(), type=pa.string())
        else:
            columns[name] = pa.array(col.to_numpy("float64"), type=pa.float64())
    return pa.table(columns)


def _csv_header(columns) -> bytes:
    return (",".join(columns) + "\n").encode()


def _append_csv(table, fh) -> None:
    """``table``'s rows, no header, numbers as their shortest round-trip text (pyarrow)."""
    import pyarrow.csv as pacsv

    pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))


def write_numeric_csv(frame: pd.DataFrame, path: Path) -> None:
    """A large CSV of an ISO timestamp and numbers, via Arrow (fast; round-trip floats),
    written atomically."""
    table = numeric_table(frame)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(_csv_header(frame.columns))
            _append_csv(table, fh)

    _atomic(path, write)


class EquityWriter:
    """``equity.csv`` written while a replay runs: each batch's equity segment is cut into
    pieces of `PIECE_ROWS` rows, turned into text by two background threads (Arrow formats
    without holding the GIL, so on two cores this work leaves the replay's own path, and
    the last segment, which the replay waits for, is formatted on both cores) and appended
    in order by a third. The file is a hidden temporary in the output directory until
    `write_outputs` renames it to ``equity.csv`` with the other outputs; `abort` removes
    it. The bytes are those `write_numeric_csv` writes for the whole curve at once."""

    PIECE_ROWS = 65_536  # ~40 ms of formatting each: the last segment's pieces spread over both cores

    def __init__(self, out_dir: str | Path) -> None:
        from concurrent.futures import ThreadPoolExecutor

        out = Path(out_dir).resolve()
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".equity.csv.", suffix=".part")
        self.path = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        self._fh.write(_csv_header(SEGMENT_COLUMNS))
        self._format = ThreadPoolExecutor(2, thread_name_prefix="tradpal-equity-format")
        self._write = ThreadPoolExecutor(1, thread_name_prefix="tradpal-equity-write")  # one: in order
        self._pending: list = []

    def add(self, segments: list[pd.DataFrame]) -> None:
        """Append ``segments`` (in order, after those added before), in the background."""
        for seg in segments:
            for start in range(0, len(seg), self.PIECE_ROWS):
                text = self._format.submit(_csv_text, seg, start, start + self.PIECE_ROWS)
                self._pending.append(self._write.submit(self._append, text))

    def _append(self, text) -> None:
        self._fh.write(text.result())

    def finish(self) -> Path:
        """Wait for every segment; the complete temporary file (an error in writing is raised here)."""
        try:
            for future in self._pending:
                future.result()
        except BaseException:
            self.abort()
            raise
        self._format.shutdown()
        self._write.shutdown()
        self._fh.close()
        return self.path

    def abort(self) -> None:
        """Stop and remove the temporary file (a failed replay leaves no equity.csv)."""
        self._write.shutdown(wait=True, cancel_futures=True)  # first: a write waits on its text
        self._format.shutdown(wait=True, cancel_futures=True)
        self._fh.close()
        self.path.unlink(missing_ok=True)


def _csv_text(segment: pd.DataFrame, start: int, stop: int):
    """Rows [start, stop) of an equity segment as `_append_csv` writes them, in an Arrow buffer."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    _append_csv(numeric_table(segment.iloc[start:stop][SEGMENT_COLUMNS]), sink)  # the piece's rows only
    return sink.getvalue()


def write_outputs(out_dir: str | Path, reports: pd.DataFrame, summary: dict, equity: pd.DataFrame,
                  equity_file: str | Path | None = None) -> list[Path]:
    """fills.csv, equity.csv and summary.json, each written atomically (absolute paths
    returned). ``equity_file``: equity.csv already written (`EquityWriter.finish`), moved
    into place instead of writing ``equity`` again (removed if writing fails before)."""
    out = Path(out_dir).resolve()
    paths = [out / "fills.csv", out / "equity.csv", out / "summary.json"]
    multi = len(summary.get("symbols", ())) > 1
    try:
        out.mkdir(parents=True, exist_ok=True)
        _atomic(paths[0], lambda tmp: fills_table(reports, multi).to_csv(tmp, index=False))  # floats round-trip exactly
    except BaseException:
        if equity_file is not None:
            Path(equity_file).unlink(missing_ok=True)
        raise
    if equity_file is None:
        write_numeric_csv(equity[SEGMENT_COLUMNS], paths[1])
    else:
        os.replace(equity_file, paths[1])  # written beside it (`EquityWriter`): a rename
    text = json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n"
    _atomic(paths[2], lambda tmp: Path(tmp).write_text(text))
    return paths


def gate_market_data(inputs: ReplayInputs, out: str | None, max_gap_multiple: float = 10.0,
                     data_docs: str = "on-failure"):
    """Great Expectations' market-data suite (`tradpal.quality.check_market_data`) on every
    market of the replay, before anything trades; yields (market name, result) per market,
    the first failing one last. Data Docs go to ``OUT/data_docs/market_data/NAME`` when
    ``out`` is given: for a market that fails, or for each with ``data_docs="always"``. The
    caller decides what a failure does (the flow: an artifact, then
    `QualityResult.raise_for_failure`)."""
    from tradpal.quality import check_market_data

    frames = inputs.markets or {"bars": inputs.bars}
    for name, bars in frames.items():
        docs = f"{out}/data_docs/market_data/{name.replace('/', '-')}" if out else None
        with frozen_heap():  # GX allocates enough for full collections over the whole process heap
            result = check_market_data(bars, max_gap_multiple=max_gap_multiple, data_docs_dir=docs,
                                       data_docs=data_docs)
        yield name, result
        if not result.success:
            return


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Leave the objects that exist now (imported modules: Prefect, Great Expectations,
    pandas; the inputs) out of the garbage collector's passes while the block runs
    (`gc.freeze`), and give them back after (`gc.unfreeze`). A replay allocates enough to
    trigger full collections, and each one walked that whole heap (~0.3 s of a direct
    1 M-bar replay, more in the flow process, whose heap is larger). What the block
    leaves as garbage is collected as usual, and at its end (a full collection then walks
    only what the block made); a reference cycle that was already garbage at a freeze
    waits for the end, when everything is collectable again. Replays running at once in
    one process (threads) unfreeze when the last one ends; a heap the process had frozen
    before (a long-lived live stream freezes its start-up) stays frozen."""
    global _frozen, _frozen_before
    with _frozen_lock:
        if _frozen == 0:
            _frozen_before = gc.get_freeze_count() > 0
        _frozen += 1
        gc.freeze()
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen -= 1
            if _frozen == 0:
                gc.collect()  # the block's own garbage (GX leaves cycles holding 1 M-row arrays): cheap, the rest is frozen
                if not _frozen_before:
                    gc.unfreeze()


def keep_frozen() -> None:
    """Inside `frozen_heap`: freeze what exists now too (the state a batch built and the
    next ones keep), so that later collections walk only what is new; outside, nothing."""
    with _frozen_lock:
        if _frozen:
            gc.freeze()


_frozen = 0
_frozen_before = False
_frozen_lock = threading.Lock()


@dataclass
class ReplayResult:
    summary: dict
    reports: pd.DataFrame
    equity: pd.DataFrame
    equity_file: Path | None = None  # equity.csv written during the run (``equity_to``), for `write_outputs`


async def run_replay(params: ReplayParams, inputs: ReplayInputs, ledger, *, caller=None,
                     flow_run_id: str | None = None, on_batch=None,
                     equity_to: str | Path | None = None) -> ReplayResult:
    """Replay batch by batch through the eight steps. ``caller(label)`` returns how to run
    a step (the flow passes its Prefect tasks; None runs the plain functions directly).
    ``equity_to``: an output directory where equity.csv is written while the batches run
    (`EquityWriter`); the result's ``equity_file`` then goes to `write_outputs`."""
    import uuid

    from risk.alerts import alerter_from_env
    from tasks.pipeline import run_batch
    from tasks.recorder import LedgerRecorder

    run_id = uuid.uuid4().hex
    ledger.start_run("replay", params_record(params), run_id=run_id, flow_run_id=flow_run_id)
    ctx = build_context(params, inputs, recorder=None, run_id=run_id)
    ctx.recorder = LedgerRecorder(ledger, run_id=run_id, namespace=ctx.namespace, venue=ctx.venue)
    ctx.alerter = alerter_from_env(inputs.risk)
    batches = plan_batches(inputs, params.batch_size)
    reports = []
    writer = EquityWriter(equity_to) if equity_to is not None else None
    written = 0  # equity segments handed to the writer
    try:
        with frozen_heap():
            for i, batch in enumerate(batches):
                ctx.monitor_until, ctx.final = batch.monitor_until, batch.final
                call = caller(batch.label) if caller else None
                reports.append(await run_batch(batch.signals, ctx, call=call))
                while ctx.pending_signals:  # raised by the pipeline itself (a loss-limit flatten): through the steps
                    pending, ctx.pending_signals = pd.DataFrame(ctx.pending_signals), []
                    reports.append(await run_batch(pending, ctx, call=call))
                if writer is not None:
                    writer.add(ctx.equity_segments[written:])
                    written = len(ctx.equity_segments)
                if on_batch:
                    on_batch(i + 1, len(batches), batch.label)
                keep_frozen()  # what this batch left behind (book, orders, reports) joins the frozen heap
        equity_file = writer.finish() if writer is not None else None
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        ledger.finish_run(run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    all_reports = pd.concat(reports, ignore_index=True)
    curve = equity_curve(ctx)
    summary = summarize(params, inputs, ctx, all_reports, curve)
    summary.update(run_id=run_id, ledger=ledger.url, flow_run_id=flow_run_id)
    return ReplayResult(summary, all_reports, curve, equity_file)
