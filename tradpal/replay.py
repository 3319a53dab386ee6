"""Paper replay, as plain functions: check the inputs, plan the batches, build the
context, and summarise. The `paper_replay` flow calls these around its eight tasks."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brokers.base.clock import SimulatedClock
from brokers.paper import PaperBroker
from tasks.context import Book, ExecutionContext, MarketData, PipelineConfig, SizingConfig
from tradpal.errors import InputError
from tradpal.io import load_ohlcv, load_signals


@dataclass(frozen=True)
class ReplayParams:
    ohlcv: str
    signals: str
    symbol: str
    cash: float = 10_000.0
    fee_rate: float = 0.001
    slippage_bps: float = 0.0
    out: str | None = None
    chunk_signals: int | None = None  # default: 500; 1 with a risk config (limits see every fill)
    risk_config: str | None = None

    @property
    def batch_size(self) -> int:
        if self.chunk_signals is not None:
            return self.chunk_signals
        return 1 if self.risk_config else 500

    def check(self) -> None:
        if "/" not in self.symbol:
            raise InputError(f"--symbol: expected BASE/QUOTE, got {self.symbol!r}")
        if not self.cash > 0:
            raise InputError(f"--cash: must be > 0, got {self.cash}")
        if not 0 <= self.fee_rate < 1:
            raise InputError(f"--fee-rate: must be in [0, 1), got {self.fee_rate}")
        if not 0 <= self.slippage_bps < 10_000:
            raise InputError(f"--slippage-bps: must be in [0, 10000), got {self.slippage_bps}")
        if self.chunk_signals is not None and self.chunk_signals < 1:
            raise InputError(f"chunk_signals: must be >= 1, got {self.chunk_signals}")


@dataclass
class ReplayInputs:
    bars: pd.DataFrame
    signals: pd.DataFrame
    risk: object = None  # risk.config.RiskConfig


def load_inputs(params: ReplayParams) -> ReplayInputs:
    """Load and check both files; raises `InputError` before anything is written."""
    from risk.config import load_risk_config

    params.check()
    risk = load_risk_config(params.risk_config) if params.risk_config else None
    bars = load_ohlcv(params.ohlcv)
    signals = load_signals(params.signals)
    signals["received_at"] = signals["timestamp"]  # in a replay a signal arrives at its own time
    return ReplayInputs(bars, signals, risk)


def quote_of(symbol: str) -> str:
    return symbol.split("/")[1].split(":")[0]


def build_context(params: ReplayParams, inputs: ReplayInputs, *, recorder, run_id: str) -> ExecutionContext:
    """Paper broker on a simulated clock; the broker enforces cash at fill time."""
    clock = SimulatedClock(start=inputs.bars["timestamp"].iloc[0] - pd.Timedelta(days=1))
    quote = quote_of(params.symbol)
    broker = PaperBroker(cash=params.cash, quote_currency=quote, maker_fee=params.fee_rate,
                         taker_fee=params.fee_rate, slippage_bps=params.slippage_bps, clock=clock,
                         name=f"paper:{run_id}")
    broker.add_market_data(params.symbol, inputs.bars)
    config = PipelineConfig(sizing=SizingConfig("signal"), check_balance=False, order_timeout_s=None,
                            max_price_deviation=1.0, risk=inputs.risk)
    return ExecutionContext(broker=broker, clock=clock, config=config,
                            market=MarketData({params.symbol: inputs.bars}),
                            book=Book(cash=params.cash, quote_currency=quote), recorder=recorder,
                            run_id=run_id, namespace=f"replay:{run_id}", strategy="replay")


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
    end = inputs.bars["timestamp"].iloc[-1]
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
        return pd.DataFrame(columns=["timestamp", "cash", "position_value", "equity"])
    return pd.concat(segs, ignore_index=True)


def max_drawdown(equity: np.ndarray) -> float:
    """max over t of 1 - equity_t / max(equity up to t), a positive fraction."""
    if len(equity) == 0:
        return 0.0
    peak = np.maximum.accumulate(equity)
    with np.errstate(invalid="ignore", divide="ignore"):
        dd = np.where(peak > 0, 1.0 - equity / peak, 0.0)
    return float(max(dd.max(), 0.0))


def iso_utc(stamps: pd.Series):
    """ISO-8601 UTC strings (``YYYY-MM-DDTHH:MM:SSZ``), vectorised in Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pa.array(stamps.to_numpy("datetime64[ns]").astype("datetime64[s]"), type=pa.timestamp("s"))
    text = pc.replace_substring(pc.cast(values, pa.string()), " ", "T")  # cast is ~30x faster than strftime
    return pc.binary_join_element_wise(text, "Z", "").to_numpy(zero_copy_only=False)


def fills_table(reports: pd.DataFrame) -> pd.DataFrame:
    fills = reports[reports["quantity"] > 0]
    return pd.DataFrame({
        "timestamp": iso_utc(fills["timestamp"]),
        "signal_id": fills["signal_id"].astype(str), "side": fills["side"].astype(str),
        "quantity": fills["quantity"].astype("float64"), "price": fills["price"].astype("float64"),
        "fee": fills["fee"].astype("float64"),
    })


def summarize(params: ReplayParams, inputs: ReplayInputs, ctx: ExecutionContext, reports: pd.DataFrame) -> dict:
    book = ctx.book
    last_close = float(inputs.bars["close"].iloc[-1])
    position = float(book.positions.get(params.symbol, 0.0))
    curve = equity_curve(ctx)
    fills = reports[reports["quantity"] > 0]
    unfilled = int(((reports["exec_type"] == "CANCELED") & (reports["quantity"] == 0)).sum())
    rejected = int(sum(v for k, v in ctx.counts.items() if k.endswith(".rejected")))
    return {
        "symbol": params.symbol,
        "bars": len(inputs.bars),
        "signals": len(inputs.signals),
        "n_fills": len(fills),
        "rejected": rejected,
        "unfilled": unfilled,
        "total_fees": float(fills["fee"].sum()),
        "realized_pnl": float(book.realized_pnl),
        "unrealized_pnl": position * last_close - float(book.cost_basis.get(params.symbol, 0.0)),
        "initial_cash": params.cash,
        "final_cash": float(book.cash),
        "final_position": position,
        "final_equity": float(book.cash + position * last_close),
        "max_drawdown": max_drawdown(curve["equity"].to_numpy("float64")),
        "breaches": ctx.breaches,
        "halted": any(b["rule"] in ("max_drawdown", "max_daily_loss", "loss_limit") for b in ctx.breaches),
        "quote_currency": book.quote_currency,
        "params": asdict(params),
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


def write_numeric_csv(frame: pd.DataFrame, path: Path) -> None:
    """A large CSV of an ISO timestamp and numbers, via Arrow (fast; round-trip floats)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.Table.from_pandas(frame, preserve_index=False)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write((",".join(frame.columns) + "\n").encode())
            pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))

    _atomic(path, write)


def write_outputs(out_dir: str | Path, reports: pd.DataFrame, summary: dict, equity: pd.DataFrame) -> list[Path]:
    """fills.csv, equity.csv and summary.json, each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eq = pd.DataFrame({"timestamp": iso_utc(equity["timestamp"]), **{c: equity[c].astype("float64")
                       for c in ("cash", "position_value", "equity")}})
    paths = [out / "fills.csv", out / "equity.csv", out / "summary.json"]
    _atomic(paths[0], lambda tmp: fills_table(reports).to_csv(tmp, index=False))  # floats round-trip exactly
    write_numeric_csv(eq, paths[1])
    text = json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n"
    _atomic(paths[2], lambda tmp: Path(tmp).write_text(text))
    return paths


@dataclass
class ReplayResult:
    summary: dict
    reports: pd.DataFrame
    equity: pd.DataFrame


async def run_replay(params: ReplayParams, inputs: ReplayInputs, ledger, *, caller=None,
                     flow_run_id: str | None = None, on_batch=None) -> ReplayResult:
    """Replay batch by batch through the eight steps. ``caller(label)`` returns how to run
    a step (the flow passes its Prefect tasks; None runs the plain functions directly)."""
    import uuid

    from risk.alerts import alerter_from_env
    from tasks.pipeline import run_batch
    from tasks.recorder import LedgerRecorder

    run_id = uuid.uuid4().hex
    ledger.start_run("replay", asdict(params), run_id=run_id, flow_run_id=flow_run_id)
    ctx = build_context(params, inputs, recorder=None, run_id=run_id)
    ctx.recorder = LedgerRecorder(ledger, run_id=run_id, namespace=ctx.namespace, venue=ctx.venue)
    ctx.alerter = alerter_from_env(inputs.risk)
    batches = plan_batches(inputs, params.batch_size)
    reports = []
    try:
        for i, batch in enumerate(batches):
            ctx.monitor_until, ctx.final = batch.monitor_until, batch.final
            call = caller(batch.label) if caller else None
            reports.append(await run_batch(batch.signals, ctx, call=call))
            if on_batch:
                on_batch(i + 1, len(batches), batch.label)
    except BaseException as exc:
        ledger.finish_run(run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    all_reports = pd.concat(reports, ignore_index=True)
    summary = summarize(params, inputs, ctx, all_reports)
    summary.update(run_id=run_id, ledger=ledger.url, flow_run_id=flow_run_id)
    return ReplayResult(summary, all_reports, equity_curve(ctx))
