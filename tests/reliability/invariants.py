"""The three invariants every reliability test ends with, checked against the exchange
emulator's own order book (read over HTTP from the emulator, never from TradPal's code):

1. every signal reaches exactly one terminal outcome in the ledger: filled, partially
   filled then cancelled/expired, cancelled/expired unfilled, rejected with a reason, or
   failed with a reason (a broker step gave up, or the order never reached the venue);
2. no order is placed twice: one venue order per client order id, one client order id
   per signal;
3. the ledger agrees with the exchange: the same orders (venue id, status, filled
   quantity) and the same fills (trade ids, quantities, prices), and nothing the ledger
   calls "never reached the venue" exists there.

``read_book(base_url, api_key, secret, symbols)`` reads the venue: ``GET /admin/state``
(its counts) and the signed ``GET /api/v3/allOrders`` and ``/api/v3/myTrades`` (its
records), after clearing any armed fault (``POST /admin/faults``). ``check(ledger, book)``
raises ``InvariantViolation`` listing every breach, else returns the outcome counts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

TERMINAL = frozenset({"FILLED", "CANCELED", "EXPIRED", "REJECTED"})
BROKER_STEPS = frozenset({"placement", "monitoring", "positions", "reconcile"})
REDELIVERY = "signal already received"
CLEAR_FAULTS = {"latency_ms": 0, "fail_next": 0, "lose_next": 0, "rate_limit_next": 0, "drop_next": 0,
                "drop_mid_response_next": 0, "banned_until_ms": 0, "ban_on_abuse_s": 0, "fault_on": ""}


class InvariantViolation(AssertionError):
    """One or more invariants do not hold; the message lists each breach."""


@dataclass
class VenueBook:
    """What the venue itself holds: its orders and trades, as it reports them."""

    orders: list[dict[str, Any]]  # clientOrderId, orderId, status, origQty, executedQty, symbol
    trades: list[dict[str, Any]]  # id, orderId, qty, price, symbol
    state: dict[str, Any] = field(default_factory=dict)  # GET /admin/state


# -- reading the venue ---------------------------------------------------------------------


def _http(method: str, url: str, *, headers: dict[str, str] | None = None, body: bytes | None = None) -> Any:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - 127.0.0.1 only
        return json.loads(resp.read() or b"null")


def admin(base_url: str, path: str, payload: dict[str, Any] | None = None) -> Any:
    """``GET /admin/<path>`` or, with a payload, ``POST`` it as JSON."""
    if payload is None:
        return _http("GET", f"{base_url}/admin/{path}")
    return _http("POST", f"{base_url}/admin/{path}", headers={"Content-Type": "application/json"},
                 body=json.dumps(payload).encode())


def _signed(base_url: str, path: str, params: dict[str, Any], api_key: str, secret: str) -> Any:
    query = urllib.parse.urlencode({**params, "timestamp": int(time.time() * 1000), "recvWindow": 10_000})
    signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    return _http("GET", f"{base_url}{path}?{query}&signature={signature}", headers={"X-MBX-APIKEY": api_key})


def read_book(base_url: str, api_key: str, secret: str, symbols: list[str]) -> VenueBook:
    """The venue's whole order book and trade list (faults cleared first, so the reads
    themselves are not refused)."""
    admin(base_url, "faults", CLEAR_FAULTS)
    orders: list[dict[str, Any]] = []
    trades: list[dict[str, Any]] = []
    for symbol in symbols:
        venue_id = symbol.replace("/", "")
        after = 0
        while True:
            page = _signed(base_url, "/api/v3/allOrders", {"symbol": venue_id, "orderId": after, "limit": 1000},
                           api_key, secret)
            orders += [{**o, "symbol": symbol} for o in page]
            if len(page) < 1000:
                break
            after = page[-1]["orderId"] + 1
        after = 0
        while True:
            page = _signed(base_url, "/api/v3/myTrades", {"symbol": venue_id, "fromId": after, "limit": 1000},
                           api_key, secret)
            trades += [{**t, "symbol": symbol} for t in page]
            if len(page) < 1000:
                break
            after = page[-1]["id"] + 1
    return VenueBook(orders, trades, admin(base_url, "state"))


# -- the check -------------------------------------------------------------------------------


def _failed(rejections: pd.DataFrame) -> bool:
    """A failure (the system gave up: a broker step's retries spent, the order never reached
    the venue, the process died) rather than a refusal (risk checks, the venue said no)."""
    return bool(((rejections["step"] == "reconcile")
                 | rejections["reason"].str.startswith(tuple(f"{s} failed" for s in BROKER_STEPS))).any())


def _outcome(order: pd.Series | None, rejections: pd.DataFrame) -> tuple[str, str | None]:
    """(outcome, problem or None) of one signal."""
    if order is None:
        if rejections.empty:
            return "none", "no order and no rejection: the signal has no outcome"
        if rejections["reason"].fillna("").str.strip().eq("").any():
            return "rejected", "a rejection without a reason"
        return ("failed" if _failed(rejections) else "rejected"), None
    status, filled = order["status"], float(order["filled_quantity"] or 0.0)
    if status not in TERMINAL:
        return "open", f"order {order['client_order_id']} is still {status}"
    if status == "FILLED":
        if abs(filled - float(order["quantity"])) > 1e-9 * max(1.0, float(order["quantity"])):
            return "filled", f"FILLED with {filled} of {order['quantity']}"
        return "filled", None
    if status in ("CANCELED", "EXPIRED"):
        return ("partial_then_cancelled" if filled > 0 else "cancelled"), None
    if not (order["reason"] or "").strip():
        return "rejected", f"order {order['client_order_id']} REJECTED without a reason"
    return ("failed" if len(rejections) and _failed(rejections) else "rejected"), None


def check(ledger, book: VenueBook, *, namespace: str = "live", expect_signals: set[str] | None = None,
          allow_open: bool = False) -> Counter:
    """Check the three invariants of ``ledger`` (a ``tradpal.ledger.Ledger``) against
    ``book``. ``expect_signals``: ids that must each have an outcome (a signal the ledger
    never recorded is lost). Returns the outcomes counted per signal (plus ``orders``,
    ``fills``); raises ``InvariantViolation`` naming every breach."""
    problems: list[str] = []
    signals = ledger.frame("signals")
    signals = signals[signals["namespace"] == namespace]
    orders = ledger.frame("orders")
    orders = orders[orders["signal_pk"].isin(signals["id"])]
    fills = ledger.frame("fills")
    rejections = ledger.frame("rejections")
    rejections = rejections[rejections["namespace"] == namespace]
    recorded = set(signals["signal_id"])
    # a re-delivery's rejection is about the delivery, not the signal (recorded the first time)
    redelivered = rejections["signal_id"].isin(recorded) & rejections["reason"].str.startswith(REDELIVERY)
    rejections = rejections[~redelivered]

    # 1. exactly one terminal outcome per signal
    outcomes: Counter = Counter()
    pk_to_signal = dict(zip(signals["id"], signals["signal_id"], strict=True))
    by_signal = orders.assign(signal_id=orders["signal_pk"].map(pk_to_signal)).groupby("signal_id")
    per_signal_orders = {sid: g for sid, g in by_signal}
    rejected_ids = set(rejections["signal_id"].dropna())
    for sid in sorted(recorded | rejected_ids | (expect_signals or set())):
        mine = per_signal_orders.get(sid)
        rej = rejections[rejections["signal_id"] == sid]
        if mine is not None and len(mine) > 1:
            problems.append(f"signal {sid}: {len(mine)} orders ({', '.join(mine['client_order_id'])})")
            continue
        outcome, problem = _outcome(None if mine is None else mine.iloc[0], rej)
        if problem and not (allow_open and outcome == "open"):
            problems.append(f"signal {sid}: {problem}")
        outcomes[outcome] += 1

    # 2. no order placed twice (at the venue: one order per client id; ours only)
    ours = [o for o in book.orders if str(o["clientOrderId"]).startswith("tp-")]
    twice = {c: n for c, n in Counter(o["clientOrderId"] for o in ours).items() if n > 1}
    problems += [f"client order id {c} placed {n} times at the venue" for c, n in twice.items()]
    if book.state and book.state.get("orders") != len(book.orders):
        problems.append(f"venue state counts {book.state.get('orders')} orders, its book lists {len(book.orders)}")

    # 3. the ledger agrees with the venue
    ledger_orders = orders.set_index("client_order_id")
    venue_orders = {o["clientOrderId"]: o for o in ours}
    for coid, vo in venue_orders.items():
        if coid not in ledger_orders.index:
            problems.append(f"venue order {coid} ({vo['status']}) is missing from the ledger")
            continue
        lo = ledger_orders.loc[coid]
        if lo["status"] != vo["status"]:
            problems.append(f"order {coid}: ledger {lo['status']}, venue {vo['status']}")
        if str(lo["broker_order_id"]) != str(vo["orderId"]):
            problems.append(f"order {coid}: ledger venue id {lo['broker_order_id']}, venue {vo['orderId']}")
        if abs(float(lo["filled_quantity"] or 0) - float(vo["executedQty"])) > 1e-9:
            problems.append(f"order {coid}: ledger filled {lo['filled_quantity']}, venue {vo['executedQty']}")
    for coid, lo in ledger_orders.iterrows():
        if coid not in venue_orders and lo["status"] != "REJECTED":
            problems.append(f"ledger order {coid} is {lo['status']} but the venue never had it")
        if coid not in venue_orders and lo["status"] == "REJECTED" and pd.notna(lo["broker_order_id"]):
            problems.append(f"ledger order {coid} has venue id {lo['broker_order_id']} the venue does not know")
    order_by_id = {o["orderId"]: o["clientOrderId"] for o in ours}
    venue_trades = {str(t["id"]): t for t in book.trades if t["orderId"] in order_by_id}
    ledger_fills = fills[fills["order_pk"].isin(orders["id"])].set_index("trade_id")
    if set(ledger_fills.index) != set(venue_trades):
        missing = sorted(set(venue_trades) - set(ledger_fills.index))
        extra = sorted(set(ledger_fills.index) - set(venue_trades))
        problems.append(f"fills differ: missing from the ledger {missing[:10]}, unknown to the venue {extra[:10]}")
    pk_to_coid = dict(zip(orders["id"], orders["client_order_id"], strict=True))
    for tid, t in venue_trades.items():
        if tid not in ledger_fills.index:
            continue
        lf = ledger_fills.loc[tid]
        if pk_to_coid.get(lf["order_pk"]) != order_by_id[t["orderId"]]:
            problems.append(f"fill {tid} is booked on the wrong order")
        if abs(float(lf["quantity"]) - float(t["qty"])) > 1e-9 or abs(float(lf["price"]) - float(t["price"])) > 1e-12:
            problems.append(f"fill {tid}: ledger {lf['quantity']} @ {lf['price']}, venue {t['qty']} @ {t['price']}")
    if problems:
        raise InvariantViolation(f"{len(problems)} invariant breach(es):\n  " + "\n  ".join(problems[:50]))
    outcomes["orders"] = len(ledger_orders)
    outcomes["fills"] = len(ledger_fills)
    return outcomes
