"""The monitoring step's part of brackets (`risk.brackets`): attach or place the legs,
keep the OCO promise, record the legs in the ledger and the bracket's life in the audit
log, alert when a stop is hit or a leg cannot be placed, protect a partly filled entry
as it fills (emulated: the legs grow with it), and take open legs and working entries
over from the ledger after a restart.

One `BracketPass` per monitoring call works on that call's memory and reports; its
changes reach ``ctx`` only in `commit`, so a failed pass (retried by its task) leaves
nothing half-done behind in memory. Leg orders are written to the ledger in `commit`
(before the step's own record, which books their fills), once each.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd

from brokers.base import Order, OrderResult, OrderType, Side
from risk.brackets import (
    STOP_LEG,
    TARGET_LEG,
    Bracket,
    describe,
    filled_legs,
    is_target,
    last_bracket_state,
    leg_name,
    levels_for,
    next_leg,
    open_legs,
    recorded_specs,
    rule_with_signal,
    skipped_legs,
    working_entries,
)
from tasks.context import ExecutionContext, OpenOrder
from tasks.orders import client_order_id, round_to_tick

log = logging.getLogger("tradpal.brackets")


def natively(broker) -> bool:
    """Whether brackets are left to the broker (``supports_brackets``). A native bracket
    activates when its entry ends; where an entry may fill in parts over several bars (the
    paper broker with a participation cap), monitoring emulates the bracket instead, so
    that what has filled is protected as it fills."""
    if not getattr(broker, "supports_brackets", False):
        return False
    return getattr(broker, "max_participation", None) is None


def leg_coids(brackets: dict[str, Bracket]) -> set[str]:
    return {c for b in brackets.values() for c in b.legs.values()}


def next_bar_wake(ctx: ExecutionContext, brackets: dict[str, Bracket], wake: pd.Timestamp) -> pd.Timestamp:
    """Replay with emulated brackets working: wake at the next bar of their symbols (so
    that one leg's fill cancels the other before the next bar), else at ``wake``."""
    if not ctx.clock.simulated:
        return wake
    now_ns = ctx.clock.now().value
    best = wake.value
    for b in brackets.values():
        if b.native or b.state == "closed" or b.symbol not in ctx.market:
            continue
        ts = ctx.market.timestamps(b.symbol)
        i = int(np.searchsorted(ts, now_ns, side="right"))
        if i < len(ts):
            best = min(best, int(ts[i]))
    return pd.Timestamp(best, tz="UTC")


class BracketPass:
    """Brackets during one monitoring call."""

    def __init__(self, ctx: ExecutionContext, memory: dict[str, OpenOrder], reports: list[dict]) -> None:
        self.ctx, self.memory, self.reports = ctx, memory, reports
        self.brackets: dict[str, Bracket] = dict(ctx.brackets)
        self.new_legs: list[dict] = []
        self.audit: list[dict] = []
        self.alerts: list[tuple[str, str, str, str]] = []  # (key, title, body, level)
        self.restored = ctx.brackets_restored
        # the levels signals carried (step 1) are used by this batch's pass or never (the signal was refused
        # at steps 2-5): all of those seen here are dropped in commit
        self.seen_specs = set(ctx.signal_brackets)

    @property
    def risk(self):
        return self.ctx.config.risk

    # -- start: restore, sells close, buys attach ---------------------------------------

    async def start(self, placed_rows: list[dict]) -> None:
        if not self.restored:
            await self._restore()
            await self._restore_entries({r["client_order_id"] for r in placed_rows})
            await self._close_filled_while_down()
        specs = self.ctx.signal_brackets
        if self.risk is None and not specs:
            return
        for row in placed_rows:
            if row["side"] == "sell":
                for b in [b for b in self.brackets.values() if b.symbol == row["symbol"] and b.state == "open"]:
                    await self._close(b, f"closed by the sell signal {row['signal_id']}", cancel=True)
                continue
            base = self.risk.brackets.rule_for(row["strategy"]) if self.risk is not None else None
            rule, sources = rule_with_signal(base, specs.get(row["signal_id"]))
            if rule is not None:
                await self._attach(row, rule, sources)

    def _bracket(self, row: dict, rule, sources: dict[str, str]) -> Bracket:
        ctx, prefix = self.ctx, self.ctx.config.client_id_prefix
        sid, symbol = row["signal_id"], row["symbol"]
        at = np.array([pd.Timestamp(row["signal_time"]).value])
        levels = _on_ticks(levels_for(rule, lambda period: float(ctx.market.atr_at(symbol, at, period)[0])),
                           ctx.config.rules_for(symbol).tick_size)
        native = natively(ctx.broker)
        return Bracket(sid, row["client_order_id"], symbol, row["strategy"],
                       {STOP_LEG: client_order_id(sid, STOP_LEG, prefix),
                        TARGET_LEG: client_order_id(sid, TARGET_LEG, prefix)},
                       native, rule.trailing, "pending", levels, rule, row["signal_time"], sources=sources)

    async def _attach(self, row: dict, rule, sources: dict[str, str]) -> None:
        b = self._bracket(row, rule, sources)
        if b.native:
            self.ctx.broker.attach_bracket(row["broker_order_id"], b.symbol, levels=b.levels,
                                           stop_client_order_id=b.legs[STOP_LEG],
                                           target_client_order_id=b.legs[TARGET_LEG], trailing=rule.trailing)
        self.brackets[b.entry] = b

    async def _restore(self) -> None:
        """Open legs in the ledger (a restarted process) join this pass's memory."""
        self.restored = True
        ledger = getattr(self.ctx.recorder, "ledger", None)
        if ledger is None:
            return
        legs = open_legs(ledger, self.ctx.namespace, self.ctx.venue, self.ctx.config.client_id_prefix)
        native = natively(self.ctx.broker)
        for r in legs:
            at_venue = await self.ctx.broker.get_order_by_client_id(r["client_order_id"], r["symbol"])
            if at_venue is None:  # open in the ledger, unknown to this venue (reconciliation said so too)
                self.audit.append({"event": "bracket.leg_missing", "entity": "order", "entity_id": r["client_order_id"],
                                   "payload": {"signal_id": r["signal_id"], "leg": leg_name(r["leg"])}})
                continue
            r = {**r, "broker_order_id": at_venue.order_id}
            entry = client_order_id(r["signal_id"], 0, self.ctx.config.client_id_prefix)
            b = self.brackets.get(entry)
            if b is None:
                last = last_bracket_state(ledger, r["signal_id"])
                trail = last.get("trail") if not native else None
                b = Bracket(r["signal_id"], entry, r["symbol"], r["strategy"] or "default", {}, native,
                            trailing=bool(last.get("trailing")), state="open",
                            signal_time=pd.Timestamp(r["signal_time"]), trail=trail,
                            high_water=float(last.get("high_water") or 0.0),
                            watched_ns=self.ctx.clock.now().value, entry_done=True)
            if not is_target(r["leg"]):
                b = replace(b, stop=r["stop_price"])
            self.brackets[entry] = replace(b, legs={**b.legs, r["leg"]: r["client_order_id"]},
                                           entry_filled=max(b.entry_filled, float(r["quantity"])))
            if r["client_order_id"] not in self.memory:
                row = _leg_row(b, r["leg"], r["client_order_id"], r["broker_order_id"], r["quantity"],
                               r["price"] if is_target(r["leg"]) else r["stop_price"],
                               pd.Timestamp(r["placed_at"] or r["created_at"]))
                filled = float(r["filled_quantity"] or 0.0)
                self.memory[r["client_order_id"]] = OpenOrder(row, int(r["fills_seen"]), filled,
                                                              float(r["avg_price"] or 0.0), float(r["fees"] or 0.0))
                self.audit.append({"event": "bracket.resumed", "entity": "order", "entity_id": r["client_order_id"],
                                   "payload": {"signal_id": r["signal_id"], "leg": leg_name(r["leg"])}})

    async def _restore_entries(self, fresh: set[str]) -> None:
        """Buy entries a restarted process finds working (or filled while it was down, as
        this run's reconciliation recorded) get their bracket back: the strategy's rule of
        the current configuration with the levels the signal carried (audit
        ``bracket.requested``). A working entry joins monitoring's memory (its fills from
        here on are reported and booked), so its bracket is placed, or grows, as it fills.
        ``fresh``: this batch's own entries (placed just now, attached as usual)."""
        ctx = self.ctx
        ledger = getattr(ctx.recorder, "ledger", None)
        if ledger is None:
            return
        rows = [r for r in working_entries(ledger, ctx.namespace, ctx.venue, ctx.run_id, ctx.config.client_id_prefix)
                if r["client_order_id"] not in fresh]
        if not rows:
            return
        specs = recorded_specs(ledger, ctx.namespace, [r["signal_id"] for r in rows])
        for r in rows:
            base = self.risk.brackets.rule_for(r["strategy"] or "default") if self.risk is not None else None
            rule, sources = rule_with_signal(base, specs.get(r["signal_id"]))
            coid = r["client_order_id"]
            if rule is None:
                continue
            at_venue = await ctx.broker.get_order_by_client_id(coid, r["symbol"])
            if at_venue is None:
                continue
            row = {"client_order_id": coid, "broker_order_id": at_venue.order_id, "signal_id": r["signal_id"],
                   "symbol": r["symbol"], "side": "buy", "strategy": r["strategy"] or "default",
                   "quantity": float(r["quantity"]),
                   "reference_price": float(r["reference_price"]) if r["reference_price"] is not None else float("nan"),
                   "signal_time": _utc(r["signal_time"]), "placed_at": _utc(r["placed_at"] or r["created_at"])}
            b = self._bracket(row, rule, sources)
            have = self.brackets.get(coid)  # its legs were restored: the bracket goes on from them
            if have is not None:
                b = replace(b, legs=have.legs, state="open", stop=have.stop, trail=have.trail,
                            high_water=have.high_water, watched_ns=have.watched_ns, entry_filled=have.entry_filled,
                            trailing=have.trailing or b.trailing)
            elif b.native:
                ctx.broker.attach_bracket(at_venue.order_id, b.symbol, levels=b.levels,
                                          stop_client_order_id=b.legs[STOP_LEG],
                                          target_client_order_id=b.legs[TARGET_LEG], trailing=rule.trailing)
            self.brackets[coid] = b
            working = not at_venue.status.is_terminal
            if working and coid not in self.memory:
                self.memory[coid] = OpenOrder(row, int(r["fills_seen"]), float(r["filled_quantity"] or 0.0),
                                              float(r["avg_price"] or 0.0), float(r["fees"] or 0.0))
            self.audit.append({"event": "bracket.resumed", "entity": "signal", "entity_id": r["signal_id"],
                               "payload": {"entry": coid, "entry_status": at_venue.status.value,
                                           "filled": float(at_venue.executed_quantity), "sources": sources,
                                           "legs_restored": have is not None}})

    async def _close_filled_while_down(self) -> None:
        """A leg the ledger shows filled (the reconciliation recorded it: it filled while the
        process was down) closes its bracket: the other legs still working are cancelled."""
        ledger = getattr(self.ctx.recorder, "ledger", None)
        if ledger is None:
            return
        ids = [b.signal_id for b in self.brackets.values() if b.state == "open"]
        done = {r["signal_id"]: r for r in filled_legs(ledger, self.ctx.namespace, self.ctx.venue, ids,
                                                        self.ctx.config.client_id_prefix)}
        for b in list(self.brackets.values()):
            r = done.get(b.signal_id)
            if b.state == "open" and r is not None:
                await self._close(b, f"OCO: the other leg {r['client_order_id']} filled while the process was down",
                                  cancel=True)

    # -- advance: protect what filled, keep the OCO promise, close ----------------------

    async def advance(self) -> None:
        for entry, b in list(self.brackets.items()):
            if b.state == "closed":
                continue
            oo = self.memory.get(entry)
            if b.native:
                if b.state == "pending" and oo is None:
                    await self._activate_native(b)
            elif oo is None:  # the entry ended: protect all it filled (once)
                if not b.entry_done:
                    await self._protect(b, final=True)
            elif oo.cum_qty > b.entry_filled * (1 + 1e-9) + 1e-12:  # filled (more) and still working
                await self._protect(b, final=False)
        for b in list(self.brackets.values()):
            if b.state == "open" and b.trail is not None:
                await self._trail(b)
        for b in list(self.brackets.values()):
            if b.state == "open":
                await self._watch(self.brackets[b.entry])

    async def _activate_native(self, b: Bracket) -> None:
        """A native bracket's entry ended: the broker placed the legs; take them in."""
        ctx = self.ctx
        entry = await ctx.broker.get_order_by_client_id(b.entry, b.symbol)
        if entry is None or not entry.executed_quantity > 0:
            self._set(b.with_state("closed"))
            return
        assert b.levels is not None and b.rule is not None and entry.executed_price is not None
        avg, qty = float(entry.executed_price), float(entry.executed_quantity)
        stop, target = b.levels(avg)
        prices = {STOP_LEG: stop, TARGET_LEG: target}
        placed: dict[int, OrderResult] = {}
        for leg in (STOP_LEG, TARGET_LEG):
            if prices[leg] is not None and (r := await ctx.broker.get_order_by_client_id(b.legs[leg], b.symbol)):
                placed[leg] = r
        problems = skipped_legs(b.rule, stop, target, avg)
        if problems:
            self._alert(f"bracket:{b.signal_id}:skipped", f"TradPal bracket leg not placed: {b.symbol}",
                        f"Entry {b.entry} (signal {b.signal_id}, strategy {b.strategy}) filled {qty:g} @ {avg:g}; "
                        + "; ".join(problems) + ".", "warning")
        self._opened(b, entry, placed, prices, qty, avg, None, problems)
        await self._poll_legs([r.client_order_id for r in placed.values()])

    async def _protect(self, b: Bracket, *, final: bool) -> None:
        """Emulated: legs for what the entry has filled so far. The first fill places them
        (``bracket.opened``); each further fill of a working entry replaces them with legs
        for the whole filled quantity (``bracket.grown``: the working legs are cancelled
        first, then the new ones placed); ``final``: the entry has ended (filled, or its
        rest cancelled or expired): what it filled is protected, nothing more follows."""
        ctx = self.ctx
        entry = await ctx.broker.get_order_by_client_id(b.entry, b.symbol)
        filled = float(entry.executed_quantity) if entry is not None else 0.0
        if not filled > 0:
            if final:
                self._set(b.with_state("closed"))
            return
        if filled <= b.entry_filled * (1 + 1e-9):
            if final:
                self._set(replace(b, entry_done=True))
            return
        assert entry is not None and b.levels is not None and b.rule is not None
        assert entry.executed_price is not None
        rule = b.rule
        avg, qty = float(entry.executed_price), filled
        if entry.fee_currency and entry.fee_currency == b.symbol.split("/")[0]:
            qty -= float(entry.fees or 0.0)  # a fee taken in the base asset: the legs sell what was received
        stop, target = b.levels(avg)
        if b.trailing and b.stop is not None and stop is not None:
            stop = max(stop, b.stop)  # a grown bracket keeps the stop its trail has raised
        growing = b.state == "open"
        old = dict(b.legs) if growing else {}
        if growing:
            await self._cancel_legs([c for c in old.values() if c in self.memory],
                                    f"the bracket grows to {qty:g}: the entry {b.entry} filled more")
            if any(self._filled(c) for c in old.values()):
                return  # a leg filled before it could be replaced: _watch closes the bracket
        prices: dict[int, float | None] = {}
        legs: dict[int, str] = {}
        prefix = ctx.config.client_id_prefix
        for price, target_leg in ((stop, False), (target, True)):  # the stop first: on a bar that reaches both, it wins
            if price is not None:
                n = next_leg(old, target_leg) if growing else (TARGET_LEG if target_leg else STOP_LEG)
                prices[n], legs[n] = price, client_order_id(b.signal_id, n, prefix)
        b = replace(b, legs=legs)
        placed: dict[int, OrderResult] = {}
        problems = [] if growing else skipped_legs(rule, stop, target, avg)
        for leg in prices:
            result, why = await _place_leg(ctx, _leg_order(b, leg, qty, prices[leg], ctx.clock.now()))
            if why:
                problems.append(f"the {leg_name(leg)} leg was refused by the venue: {why}")
            if result is not None:
                placed[leg] = result
        if problems:
            lost = growing and len(placed) < len(prices)
            self._alert(f"bracket:{b.signal_id}:skipped", f"TradPal bracket leg not placed: {b.symbol}",
                        f"Entry {b.entry} (signal {b.signal_id}, strategy {b.strategy}) filled {qty:g} @ {avg:g}; "
                        + "; ".join(problems) + (" The earlier legs are cancelled: part of the position has no "
                                                 "protection now." if lost else "."), "failure" if lost else "warning")
        self._opened(b, entry, placed, prices, qty, avg, old if growing else None, problems, filled=filled,
                     final=final)
        await self._poll_legs([r.client_order_id for r in placed.values()])

    def _opened(self, b: Bracket, entry: OrderResult, placed: dict[int, OrderResult], prices: dict[int, float | None],
                qty: float, avg: float, replaced: dict[int, str] | None, problems: list[str], *,
                filled: float | None = None, final: bool = True) -> None:
        """The bracket with its (new) legs: state, memory, ledger rows and the audit row."""
        ctx = self.ctx
        legs = {leg: r.client_order_id for leg, r in placed.items()}
        stop = next((p for n, p in prices.items() if not is_target(n) and n in legs), None)
        target = next((p for n, p in prices.items() if is_target(n)), None)
        stop_level = next((p for n, p in prices.items() if not is_target(n)), None)
        if b.trail is not None:
            trail = b.trail if stop is not None else None
        else:
            trail = avg - stop if b.trailing and not b.native and stop is not None else None
        high_water = max(b.high_water, avg)
        self._set(replace(b, legs=legs, state="open" if legs else "closed", stop=stop, trail=trail,
                          high_water=high_water, watched_ns=ctx.clock.now().value,
                          entry_filled=filled if filled is not None else b.entry_filled, entry_done=final))
        placed_at = pd.Timestamp(entry.timestamp) if replaced is None else ctx.clock.now()
        for leg, r in placed.items():
            row = _leg_row(b, leg, r.client_order_id, r.order_id, qty, prices[leg], placed_at)
            self.memory[r.client_order_id] = OpenOrder(row)
            self.new_legs.append({**row, "status": r.status.value,
                                  "order_type": "limit" if is_target(leg) else "stop",
                                  "price": prices[leg] if is_target(leg) else None,
                                  "stop_price": None if is_target(leg) else prices[leg]})
        assert b.rule is not None
        payload = {"entry": b.entry, "symbol": b.symbol, "quantity": qty, "entry_price": avg, "native": b.native,
                   "trailing": b.trailing, "stop": stop_level, "target": target,
                   "legs": {leg_name(k): v for k, v in legs.items()}, "skipped": problems, "trail": trail,
                   "high_water": high_water, "entry_status": entry.status.value,
                   "levels": {k: {"source": b.sources.get(k, "strategy"), "rule": describe(getattr(b.rule, k))}
                              for k in ("stop_loss", "take_profit") if getattr(b.rule, k) is not None}}
        if replaced is None:
            self.audit.append({"event": "bracket.opened", "entity": "signal", "entity_id": b.signal_id,
                               "payload": payload})
        else:
            self.audit.append({"event": "bracket.grown", "entity": "signal", "entity_id": b.signal_id,
                               "payload": {**payload, "entry_filled_before": b.entry_filled,
                                           "replaced": {leg_name(k): v for k, v in replaced.items()}}})

    async def _watch(self, b: Bracket) -> None:
        """The first fill of a leg closes the bracket; emulated: cancel the other leg. An
        entry still working when a leg fills has its rest cancelled (the trade is over)."""
        filled = [leg for leg, c in b.legs.items() if self._filled(c)]
        if filled:
            winner = b.legs[filled[0]]
            others = [c for c in b.legs.values() if c != winner]
            if not b.native:
                await self._cancel_legs(others, f"OCO: the other leg {winner} filled")
            else:
                await self._poll_legs(others)
            if b.entry in self.memory:
                await self._cancel_legs([b.entry], f"the bracket's {leg_name(filled[0])} leg {winner} filled: "
                                                   "the rest of the entry is cancelled")
            self._closed(b, leg_name(filled[0]), winner)
        elif not any(c in self.memory for c in b.legs.values()) and b.entry not in self.memory:
            self._closed(b, "ended", None)

    async def _trail(self, b: Bracket) -> None:
        """Emulated trailing stop: a new high moves the stop up by cancelling the working stop
        and placing the next stop leg (3, 4, ...) at high water - distance. In a replay the
        high water takes the bars up to now (each bar's high counts from the next bar, as the
        native simulator does); live, the broker's last price (``get_last_prices``)."""
        ctx = self.ctx
        high = await self._high_since(b)
        stop_leg = next((n for n in sorted(b.legs) if not is_target(n)), None)
        if high is None or stop_leg is None or b.trail is None or b.stop is None:
            return
        b = replace(b, high_water=max(b.high_water, high), watched_ns=ctx.clock.now().value)
        self._set(b)
        new_stop = b.high_water - b.trail
        tick = ctx.config.rules_for(b.symbol).tick_size
        new_stop = float(round_to_tick(np.array([new_stop]), tick)[0]) if tick else new_stop
        old = b.legs[stop_leg]
        if new_stop <= b.stop * (1 + 1e-12) or self._filled(old) or old not in self.memory:
            return
        leg = next_leg(b.legs, False)
        b = replace(b, legs={**b.legs, leg: client_order_id(b.signal_id, leg, ctx.config.client_id_prefix)})
        qty = self.memory_qty(b)
        await self._cancel_legs([old], f"trailing stop moved to {new_stop:g}: replaced by {b.legs[leg]}")
        if self._filled(old) or not qty > 0:  # it filled before the cancel reached it: closes as a stop
            return
        result, why = await _place_leg(ctx, _leg_order(b, leg, qty, new_stop, ctx.clock.now()))
        legs = {n: c for n, c in b.legs.items() if n != stop_leg}
        if result is None:  # the old stop is gone and the venue refused the new one: say so loudly
            self._set(replace(b, legs=legs, trail=None))
            self._alert(f"bracket:{b.signal_id}:trail", f"TradPal trailing stop lost: {b.symbol}",
                        f"Moving the stop of signal {b.signal_id} to {new_stop:g} was refused by the venue: {why}. "
                        "The position has no stop now.", "failure")
            self.audit.append({"event": "bracket.stop_refused", "entity": "signal", "entity_id": b.signal_id,
                               "payload": {"entry": b.entry, "to": new_stop, "reason": why}})
            return
        self._set(replace(b, legs=legs, stop=new_stop))
        row = _leg_row(b, leg, result.client_order_id, result.order_id, qty, new_stop, ctx.clock.now())
        self.memory[result.client_order_id] = OpenOrder(row)
        self.new_legs.append({**row, "status": result.status.value, "order_type": "stop", "price": None,
                              "stop_price": new_stop})
        self.audit.append({"event": "bracket.stop_moved", "entity": "signal", "entity_id": b.signal_id, "payload": {
            "entry": b.entry, "from": b.stop, "to": new_stop, "leg": result.client_order_id, "replaced": old,
            "trailing": True, "trail": b.trail, "high_water": b.high_water}})

    def memory_qty(self, b: Bracket) -> float:
        """The quantity a bracket's legs protect (its working stop's, else target's)."""
        for coid in b.legs.values():
            oo = self.memory.get(coid)
            if oo is not None:
                return float(oo.row["quantity"]) - oo.cum_qty
        return 0.0

    async def _high_since(self, b: Bracket) -> float | None:
        ctx = self.ctx
        if ctx.clock.simulated:
            if b.symbol not in ctx.market:
                return None
            ts = ctx.market.timestamps(b.symbol)
            lo, hi = np.searchsorted(ts, [b.watched_ns, ctx.clock.now().value], side="right")  # bars in (watched, now]
            highs = ctx.market.bars[b.symbol]["high"].to_numpy("float64")[lo:hi]
            return float(highs.max()) if len(highs) else None
        prices = getattr(ctx.broker, "get_last_prices", None)
        if prices is None:
            return None
        return (await prices([b.symbol])).get(b.symbol)

    async def _close(self, b: Bracket, reason: str, *, cancel: bool) -> None:
        if cancel:
            await self._cancel_legs(list(b.legs.values()), reason)
        self._closed(b, "canceled", None, reason)

    def _closed(self, b: Bracket, outcome: str, leg: str | None, reason: str | None = None) -> None:
        self._set(b.with_state("closed"))
        fill = next((r for r in reversed(self.reports) if r["client_order_id"] == leg and r["last_qty"] > 0), None)
        payload = {"entry": b.entry, "symbol": b.symbol, "outcome": outcome, "leg": leg, "reason": reason,
                   "price": fill["last_px"] if fill else None}
        self.audit.append({"event": "bracket.closed", "entity": "signal", "entity_id": b.signal_id, "payload": payload})
        if outcome == "stop":
            at = f" @ {fill['avg_px']:g}" if fill else ""
            self._alert(f"bracket:{b.signal_id}:stop", f"TradPal stop loss hit: {b.symbol}",
                        f"The protective stop {leg} of signal {b.signal_id} (strategy {b.strategy}) filled{at}; "
                        "the target was cancelled.", "warning")

    # -- helpers -------------------------------------------------------------------------

    def _filled(self, coid: str) -> bool:
        oo = self.memory.get(coid)
        if oo is not None and oo.cum_qty > 0:
            return True
        return any(r["client_order_id"] == coid and r["last_qty"] > 0 for r in self.reports)

    async def _poll_legs(self, coids) -> None:
        from tasks.monitoring import _advance

        for coid in list(coids):
            oo = self.memory.get(coid)
            if oo is not None:
                result = await self.ctx.broker.get_order_status(oo.row["broker_order_id"], oo.row["symbol"])
                _advance(self.memory, coid, oo, result, self.reports)

    async def _cancel_legs(self, coids, reason: str) -> None:
        from tasks.monitoring import _advance, cancel_or_final

        for coid in coids:
            oo = self.memory.get(coid)
            if oo is None:
                continue
            result = await self.ctx.broker.get_order_status(oo.row["broker_order_id"], oo.row["symbol"])
            if not result.status.is_terminal:
                result = await cancel_or_final(self.ctx, oo.row["broker_order_id"], oo.row["symbol"])
            _advance(self.memory, coid, oo, result, self.reports, reason)

    def _set(self, b: Bracket) -> None:
        self.brackets[b.entry] = b

    def _alert(self, key: str, title: str, body: str, level: str) -> None:
        self.alerts.append((key, title, body, level))

    # -- commit --------------------------------------------------------------------------

    def commit(self) -> None:
        """The pass succeeded: legs and audit rows to the ledger, alerts out, state to ``ctx``."""
        ctx = self.ctx
        ledger = getattr(ctx.recorder, "ledger", None)
        if ledger is not None and (self.new_legs or self.audit):
            _record(ledger, ctx, self.new_legs, self.audit)
        if ctx.alerter is not None and self.alerts:
            from tasks.pipeline import provenance

            prov = provenance(ctx)
            sent = [ctx.alerter.notify(k, t, f"{body} Flow run {prov.flow_run_id}.", level=lv)
                    for k, t, body, lv in self.alerts]
            ctx.recorder.record_alerts(sent, prov)
        ctx.brackets = {k: b for k, b in self.brackets.items() if b.state != "closed"}
        for sid in self.seen_specs:
            ctx.signal_brackets.pop(sid, None)
        ctx.brackets_restored = self.restored


async def _place_leg(ctx: ExecutionContext, order: Order) -> tuple[OrderResult | None, str | None]:
    """Place an emulated leg (looked up by client id first); a refusal is (None, why), not
    an error: the entry's fill stands, and the missing leg is alerted."""
    from brokers.base import InsufficientFundsError, InvalidOrderError
    from tasks.placement import place_one

    try:
        result = await place_one(ctx, order)
    except (InsufficientFundsError, InvalidOrderError) as exc:
        return None, f"{type(exc).__name__}: {exc.broker_message}"
    if result.status.value == "REJECTED":
        return None, result.reason or "rejected by the broker"
    return result, None


def _utc(t) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _on_ticks(levels, tick: float | None):
    """Leg prices rounded to the venue's tick, as step 3 rounds every price."""
    if not tick:
        return levels

    def rounded(entry: float) -> tuple[float | None, float | None]:
        return tuple(None if p is None else float(round_to_tick(np.array([p]), tick)[0]) for p in levels(entry))

    return rounded


def _leg_row(b: Bracket, leg: int, coid: str, broker_order_id: str, quantity: float, price: float | None,
             placed_at: pd.Timestamp) -> dict:
    """A leg as monitoring remembers it (the fields its execution reports need); its
    reference price is the leg's level, so step 8's slippage is against the stop/target."""
    placed_at = placed_at.tz_localize("UTC") if placed_at.tzinfo is None else placed_at.tz_convert("UTC")
    signal_time = b.signal_time if b.signal_time is not None else placed_at
    signal_time = signal_time.tz_localize("UTC") if signal_time.tzinfo is None else signal_time
    return {"client_order_id": coid, "broker_order_id": broker_order_id, "signal_id": b.signal_id,
            "symbol": b.symbol, "side": "sell", "strategy": b.strategy, "quantity": float(quantity),
            "reference_price": float(price) if price is not None else float("nan"),
            "signal_time": signal_time, "placed_at": placed_at}


def _leg_order(b: Bracket, leg: int, quantity: float, price: float, now: pd.Timestamp) -> Order:
    if not is_target(leg):
        return Order(b.symbol, Side.SELL, OrderType.STOP, quantity, b.legs[leg], stop_price=price,
                     placed_at=now.to_pydatetime())
    return Order(b.symbol, Side.SELL, OrderType.LIMIT, quantity, b.legs[leg], price=price,
                 placed_at=now.to_pydatetime())


def _record(ledger, ctx: ExecutionContext, legs: list[dict], audit: list[dict]) -> None:
    """Leg orders (each once: a retried pass finds them recorded) and the audit rows."""
    from tasks.pipeline import provenance

    prov = provenance(ctx)
    fresh = [r for r in legs if ledger.find_order(ctx.venue, r["client_order_id"]) is None]
    with ledger.transaction() as s:
        if fresh:
            frame = pd.DataFrame(fresh)
            frame["time_in_force"] = "GTC"
            frame["created_at"] = frame["placed_at"]
            ledger.record_orders(s, frame, namespace=ctx.namespace, venue=ctx.venue, prov=prov)
            ledger.update_orders(s, frame[["client_order_id", "broker_order_id", "status", "placed_at"]]
                                 .assign(updated_at=frame["placed_at"]), venue=ctx.venue, prov=prov)
        if audit:
            ledger.audit_many(s, audit, prov=prov)
    log.info("brackets: %d leg(s) recorded, %d audit row(s)", len(fresh), len(audit))
