"""The fault campaign: every fault the exchange emulator can inject, aimed at every step
that talks to the broker, each run ending with the three invariants checked against the
emulator's own order book (``invariants.py``).

Steps that talk to the broker: the flow itself (connect, tickers, account), ``0-reconcile``,
``5-placement``, ``6-monitoring``, ``7-positions``. A fault is armed the moment the aimed
step makes its first broker call (the Prefect task run says which step is running), so
it hits that step and no other. Two strengths:

* transient (one request): the step's retries absorb it; the run completes;
* persistent (every request of the step, until cleared): the step gives up, the run
  fails; the faults are cleared, the same signals are re-delivered, and the restart's
  reconciliation settles what the failed run left open.

Venue refusals (insufficient balance, filter failure) are aimed at placement, after our
own checks passed (the venue changes under us): each refused order must end rejected with
the venue's reason. `make test` runs one combination per fault; `make chaos` all of them
with more signals each."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from decimal import Decimal

import pandas as pd
import pytest

from brokers.base import Side
from brokers.ccxt import CcxtBroker
from brokers.emulator.engine import floor_to
from flows.live_execution import live_execution
from tests.emulated_venue import API_KEY, SYMBOL, canary, start_emulator, use_emulator
from tests.reliability.invariants import CLEAR_FAULTS, check, read_book
from tests.reliability.profile import CAMPAIGN_SIGNALS, CHAOS, REPORT
from tradpal.ledger import Ledger

TARGETS = ("flow", "reconcile", "placement", "monitoring", "positions")
TASK_STEPS = {"0-reconcile": "reconcile", "5-placement": "placement", "6-monitoring": "monitoring",
              "7-positions": "positions"}
BROKER_METHODS = ("connect", "get_account_info", "get_positions", "place_order", "cancel_order",
                  "get_order_status", "get_order_by_client_id", "get_last_prices", "get_open_orders")
PERSISTENT = 1_000


def _fault_keys() -> set[str]:
    try:
        from brokers.emulator.faults import COUNTED
    except ImportError:  # before the emulator's fault schedule module
        COUNTED = ("fail_next", "rate_limit_next", "lose_next")
    return {*COUNTED, "ban_s"}


KEYS = _fault_keys()
# fault name -> engine.faults for (transient, persistent); None: not injectable here
TRANSPORT = {
    "latency": ({"latency_ms": 300}, {"latency_ms": 300}),
    "5xx": ({"fail_next": 1}, {"fail_next": PERSISTENT}),
    "429": ({"rate_limit_next": 1, "retry_after_s": 1}, {"rate_limit_next": PERSISTENT, "retry_after_s": 1}),
    "timeout_after_acceptance": ({"lose_next": 1}, {"lose_next": PERSISTENT}),
    "ban": ({"ban_s": 1}, {"ban_s": 30}),
    "dropped_connection": ({"drop_next": 1}, {"drop_next": PERSISTENT}),
    "dropped_mid_response": ({"drop_mid_response_next": 1}, {"drop_mid_response_next": PERSISTENT}),
}
AVAILABLE = {name: spec for name, spec in TRANSPORT.items()
             if all(k in KEYS or k in ("latency_ms", "retry_after_s") for k in spec[0])}
REFUSALS = ("insufficient_balance", "filter_failure")


def current_step() -> str:
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    return "flow" if ctx is None else TASK_STEPS.get(ctx.task.name, ctx.task.name)


def aim(monkeypatch, target: str, arm) -> dict:
    """Call ``arm()`` once, before the first broker call made by ``target``."""
    state = {"armed": False, "calls": 0}
    if target == "monitoring":  # market orders come back filled at placement: poll them anyway, so that
        # monitoring talks to the venue here as it does for any order still open after placement
        monkeypatch.setattr("tasks.monitoring.settled_at_placement", lambda ctx, coid: None)
    for name in BROKER_METHODS:
        original = getattr(CcxtBroker, name)

        async def wrapper(self, *args, _original=original, **kwargs):
            if current_step() == target:
                state["calls"] += 1
                if not state["armed"]:
                    state["armed"] = True
                    arm()
            return await _original(self, *args, **kwargs)

        monkeypatch.setattr(CcxtBroker, name, wrapper)
    return state


def campaign_signals(prefix: str, n: int) -> list[dict]:
    now = pd.Timestamp.now(tz="UTC").isoformat()
    sides = ["buy", "buy", "sell"]
    return [{"timestamp": now, "symbol": SYMBOL, "side": sides[i % 3], "quantity": round(0.05 * (1 + i % 4), 2),
             "signal_id": f"{prefix}-{i}"} for i in range(n)]


def refusal(engine, name: str):
    def drain() -> None:
        """After our checks passed, another desk's resting orders on the same account lock
        almost all of its BTC and ETH (totals unchanged, so our book still agrees)."""
        price = engine.price(SYMBOL)
        low, high = (price / 2).quantize(Decimal("0.00000001")), (price * 2).quantize(Decimal("0.00000001"))
        step = engine.specs[SYMBOL].step_size
        btc = floor_to((engine.free("BTC") - Decimal("0.0001")) / (low * Decimal("1.001")), step)
        engine.place(SYMBOL, Side.BUY, "LIMIT", btc, client_order_id="other-desk-buy", price=low)
        eth = floor_to(engine.free("ETH") - Decimal("0.001"), step)
        engine.place(SYMBOL, Side.SELL, "LIMIT", eth, client_order_id="other-desk-sell", price=high)

    def tighten() -> None:  # the venue raised its minimum notional after we loaded its markets
        engine.specs[SYMBOL] = dataclasses.replace(engine.specs[SYMBOL], min_notional=Decimal(1000))

    return drain if name == "insufficient_balance" else tighten


def combinations() -> list[tuple[str, str, str]]:
    combos = [(f, t, s) for f in AVAILABLE for t in TARGETS for s in ("transient", "persistent")
              if not (f == "latency" and s == "persistent")]
    combos += [(f, "placement", "refusal") for f in REFUSALS]
    if CHAOS:
        return combos
    # make test: three, kept short (the whole matrix is `make chaos`)
    return [("timeout_after_acceptance", "placement", "transient"), ("429", "monitoring", "transient"),
            ("insufficient_balance", "placement", "refusal")]


@pytest.fixture
def venue(monkeypatch):
    secret = canary()
    handle = start_emulator(secret, balances={"BTC": "10", "ETH": "20"})
    use_emulator(monkeypatch, handle, secret)
    yield handle, secret
    handle.stop()


def run(batch: list[dict], db: str) -> dict:
    return asyncio.run(live_execution(batch, quote="BTC", database_url=db))


@pytest.mark.parametrize(("fault", "target", "strength"), combinations())
def test_fault_against_step_keeps_the_invariants(prefect_api, venue, tmp_path, monkeypatch, fault, target, strength):
    handle, secret = venue
    engine = handle.engine
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    batch = campaign_signals(f"{fault}-{target}-{strength}", CAMPAIGN_SIGNALS)
    if target == "reconcile":  # give reconciliation something to look up: an earlier, clean run
        run(campaign_signals(f"warmup-{fault}", 2), db)
        batch_ids_before = {"warmup-" + fault + f"-{i}" for i in range(2)}
    else:
        batch_ids_before = set()
    if strength == "refusal":
        arm = refusal(engine, fault)
    else:
        faults = AVAILABLE[fault][0 if strength == "transient" else 1]
        arm = lambda: engine.faults.update(faults)  # noqa: E731
    aimed = aim(monkeypatch, target, arm)

    error: BaseException | None = None
    try:
        summary = run(batch, db)
    except Exception as exc:  # noqa: BLE001 - a persistent fault may end the run; judged below
        error = exc
    assert aimed["armed"], f"{target} made no broker call: the fault was never injected"
    engine.faults.update(CLEAR_FAULTS)
    engine.faults.pop("banned_until_ms", None)
    if error is not None or strength == "persistent":  # restart: faults gone, same signals re-delivered
        monkeypatch.undo()
        use_emulator(monkeypatch, handle, secret)
        run(batch, db)

    book = read_book(handle.base_url, API_KEY, secret, [SYMBOL])
    ledger = Ledger(db)
    outcomes = check(ledger, book, expect_signals={s["signal_id"] for s in batch} | batch_ids_before)
    if strength == "refusal":  # each refused order ends rejected with the venue's words
        rejections = ledger.frame("rejections")
        refused = rejections[rejections["step"] == "placement"]
        assert len(refused) == len(batch)
        words = "insufficient balance" if fault == "insufficient_balance" else "Filter failure"
        assert refused["reason"].str.contains(words, case=False).all(), refused["reason"].tolist()
    if REPORT:
        with open(REPORT, "a") as out:
            out.write(json.dumps({"campaign": "faults", "fault": fault, "target": target, "strength": strength,
                                  "run_failed": error is not None, "error": type(error).__name__ if error else None,
                                  "broker_calls_in_step": aimed["calls"], "signals": len(batch),
                                  "outcomes": dict(outcomes)}) + "\n")
    if strength in ("transient", "refusal"):  # judged after the invariants: they must hold either way
        assert error is None, f"{fault} once at {target} should be absorbed: {error!r}"
        assert summary["n_fills"] + summary["rejected"] >= len(batch)
