"""Signals in: validate one signal at the door and emit it as the Prefect event
``tradpal.signal.received``, which triggers the ``live-execution`` deployment.

The rules are the intake step's (`tradpal.io.check_signal_rows`, plus the timestamp and
the fields it knows): a signal refused here would have been rejected at step 1. A valid
signal becomes a plain, JSON-ready dict (the event's payload, and the flow's parameter)::

    {"signal_id": "sig-…", "timestamp": "2026-11-24T08:00:00+00:00", "symbol": "BTC/USDT",
     "side": "buy", "quantity": 0.01, "strategy": "manual", "order_type": "market",
     "reference_price": 65000.0}

A re-submitted id is not refused here: the intake step refuses it (the ledger claim),
so the same id yields one order however often and wherever it is submitted.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import pandas as pd

from tradpal.errors import InputError
from tradpal.io import check_signal_record, check_signal_rows

EVENT = "tradpal.signal.received"
RESOURCE_PREFIX = "tradpal.signal."
REQUIRED = ("symbol", "side", "quantity")
OPTIONAL = ("signal_id", "timestamp", "strategy", "order_type", "limit_price", "stop_price", "reference_price",
            "time_in_force", "stop_loss", "take_profit", "trailing_stop")
NUMBERS = ("quantity", "limit_price", "stop_price", "reference_price", "stop_loss", "take_profit")
TIME_IN_FORCE = ("GTC", "IOC", "FOK")


def new_signal_id() -> str:
    return f"sig-{uuid.uuid4().hex[:20]}"


def validate_signal(raw: Any, *, where: str = "signal") -> dict[str, Any]:
    """The normalised signal, or `InputError` with one line naming ``where`` and the field.

    Required: symbol, side, quantity. Optional: signal_id (generated if absent), timestamp
    (ISO-8601 or epoch ms; default now, UTC), strategy, order_type (default market),
    limit_price, stop_price, reference_price, time_in_force (GTC, IOC or FOK; default the
    configuration's), and the entry's own bracket: stop_loss and take_profit (absolute
    prices; a buy's stop below, its target above the reference price when one is given)
    and trailing_stop (true/false). Unknown fields are refused."""
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise InputError(f"{where}: unknown field {unknown[0]!r} (expected {', '.join(REQUIRED + OPTIONAL)})")
    missing = [k for k in REQUIRED if raw.get(k) is None]
    if missing:
        raise InputError(f"{where}, field {missing[0]!r}: required")
    sig = {k: v for k, v in raw.items() if v is not None}
    for key in NUMBERS:
        if key in sig and (isinstance(sig[key], bool) or not isinstance(sig[key], int | float | str)):
            raise InputError(f"{where}, field {key!r}: must be a number, got {sig[key]!r}")
    for key in ("signal_id", "strategy", "symbol", "side", "order_type", "time_in_force"):
        if key in sig and not isinstance(sig[key], str):
            raise InputError(f"{where}, field {key!r}: must be a string, got {sig[key]!r}")
    if "time_in_force" in sig and sig["time_in_force"].strip().upper() not in TIME_IN_FORCE:
        raise InputError(f"{where}, field 'time_in_force': unknown {sig['time_in_force']!r} "
                         f"(expected {', '.join(TIME_IN_FORCE)})")
    if "trailing_stop" in sig and not isinstance(sig["trailing_stop"], bool):
        raise InputError(f"{where}, field 'trailing_stop': must be true or false, got {sig['trailing_stop']!r}")
    sig["timestamp"] = _timestamp(sig.get("timestamp"), where)
    row = {"signal_id": new_signal_id(), **sig}
    problems = check_signal_record(row)  # the intake step's own rules (plain Python where the types allow)
    if problems is None:
        problems = check_signal_rows(pd.DataFrame([row]))
    if problems:
        _, col, why = problems[0]
        raise InputError(f"{where}, field {col!r}: {why}")
    out = _normalised(sig, where)
    _check_levels(out, where)
    return out


def _check_levels(sig: dict[str, Any], where: str) -> None:
    """The bracket levels against the side and (when given) the reference price; the
    intake step checks them again with the reference it fills in from the market."""
    from risk.brackets import signal_level_problem

    problem = signal_level_problem(sig["side"], sig.get("reference_price"), sig.get("stop_loss"),
                                   sig.get("take_profit"), sig.get("trailing_stop", False),
                                   rule_known=False)  # a trailing stop may rely on the strategy's stop
    if problem is not None:
        raise InputError(f"{where}, field {problem[0]!r}: {problem[1]}")


def _timestamp(value: Any, where: str) -> str:
    if value is None:
        return pd.Timestamp.now(tz="UTC").isoformat()
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            ts = pd.Timestamp(int(value), unit="ms", tz="UTC")
        else:
            ts = pd.Timestamp(str(value))
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{where}, field 'timestamp': cannot parse {value!r} (expected ISO-8601 or epoch ms)") from None
    if ts is pd.NaT:
        raise InputError(f"{where}, field 'timestamp': cannot parse {value!r}")
    return ts.isoformat()


def _normalised(sig: dict[str, Any], where: str = "signal") -> dict[str, Any]:
    out: dict[str, Any] = {
        "signal_id": str(sig.get("signal_id") or new_signal_id()).strip(),
        "timestamp": sig["timestamp"],
        "symbol": sig["symbol"].strip().upper(),
        "side": sig["side"].strip().lower(),
        "quantity": float(sig["quantity"]),
        "order_type": str(sig.get("order_type") or "market").strip().lower(),
    }
    if sig.get("strategy"):
        out["strategy"] = sig["strategy"].strip()
    for key in ("limit_price", "stop_price", "reference_price", "stop_loss", "take_profit"):
        if key in sig:
            try:
                out[key] = float(sig[key])
            except ValueError:
                raise InputError(f"{where}, field {key!r}: must be a number, got {sig[key]!r}") from None
    if "time_in_force" in sig:
        out["time_in_force"] = sig["time_in_force"].strip().upper()
    if sig.get("trailing_stop"):
        out["trailing_stop"] = True
    if not all(math.isfinite(v) for k, v in out.items() if k in NUMBERS):
        bad = next(k for k, v in out.items() if k in NUMBERS and not math.isfinite(v))
        raise InputError(f"{where}, field {bad!r}: must be a finite number")
    return out


def parse_signal_payload(obj: Any) -> list[dict[str, Any]]:
    """One signal (a JSON object) or a list of them, validated: the normalised signals, or
    `InputError` naming the first bad one (``signals[3], field 'side': ...``). Ids repeated
    within the payload are refused."""
    if isinstance(obj, dict):
        return [validate_signal(obj)]
    if not isinstance(obj, list):
        raise InputError(f"expected a signal (JSON object) or a list of signals, got {type(obj).__name__}")
    if not obj:
        raise InputError("empty list: no signal to submit")
    signals = [validate_signal(item, where=f"signals[{i}]") for i, item in enumerate(obj)]
    seen: set[str] = set()
    for i, s in enumerate(signals):
        if s["signal_id"] in seen:
            raise InputError(f"signals[{i}], field 'signal_id': {s['signal_id']!r} repeated in this payload")
        seen.add(s["signal_id"])
    return signals


def emit_signal(signal: dict[str, Any]) -> str:
    """Emit one validated signal as ``tradpal.signal.received``; its id. Raises `InputError`
    when there is no Prefect API to send it to (events are only sent to a server)."""
    from prefect.events import emit_event
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise InputError("no Prefect API to send the event to: set PREFECT_API_URL (e.g. `make up`)")
    event = emit_event(event=EVENT, resource={"prefect.resource.id": RESOURCE_PREFIX + signal["signal_id"],
                                              "prefect.resource.name": signal["signal_id"]},
                       payload=signal)
    if event is None:
        raise InputError("no Prefect API to send the event to: set PREFECT_API_URL (e.g. `make up`)")
    return signal["signal_id"]


def flush_events(timeout: float = 10.0) -> None:
    """Wait until the events emitted by this process have been sent (a short-lived
    process calls this before exiting)."""
    import asyncio
    import threading

    from prefect.events.worker import EventsWorker

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop: drain here
        EventsWorker.drain_all(timeout=timeout)
        return
    # inside a running loop drain_all would return a coroutine: drain from a thread instead
    drainer = threading.Thread(target=EventsWorker.drain_all, kwargs={"timeout": timeout}, daemon=True)
    drainer.start()
    drainer.join(timeout)


def submit_signal(symbol: str, side: str, quantity: float, strategy: str | None = None, price: float | None = None,
                  signal_id: str | None = None, *, timestamp: Any = None, order_type: str | None = None,
                  limit_price: float | None = None, stop_price: float | None = None,
                  time_in_force: str | None = None, stop_loss: float | None = None, take_profit: float | None = None,
                  trailing_stop: bool = False, flush: bool = True) -> str:
    """Validate one signal and emit ``tradpal.signal.received``; returns the signal id.
    ``price`` is the reference price (for sizing, checks and slippage). Bad input raises
    `InputError` (one line) and emits nothing."""
    signal = validate_signal({"symbol": symbol, "side": side, "quantity": quantity, "strategy": strategy,
                              "reference_price": price, "signal_id": signal_id, "timestamp": timestamp,
                              "order_type": order_type, "limit_price": limit_price, "stop_price": stop_price,
                              "time_in_force": time_in_force, "stop_loss": stop_loss, "take_profit": take_profit,
                              "trailing_stop": trailing_stop or None})
    emit_signal(signal)
    if flush:
        flush_events()
    return signal["signal_id"]
