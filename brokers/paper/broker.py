"""The paper broker: a simulated spot venue that fills orders against market data.

The clock chooses the mode:

* **Replay** (``SimulatedClock``): orders are accepted as NEW and filled only when the
  clock advances, against the bars strictly later than the order's placement time.
  Each open order is scheduled at the first bar on which it may fill (a numpy search,
  see ``BarSeries.first_event``); advancing the clock pops the scheduled events in
  (bar time, placement order) and applies them one by one. No Python loop over bars.
* **Live** (``WallClock`` or no clock): an order is evaluated at once against the last
  price; what does not fill rests and is evaluated on every ``set_price``.

Fees are charged in the quote currency; positions are spot only (no shorts, no
negative cash): a fill the account cannot pay is refused, never clipped.

Options (the defaults reproduce the basic simulator exactly):

* ``slippage``: a model of ``brokers.paper.slippage`` (default ``FixedBps(slippage_bps)``),
  applied to market and stop fills once the fill quantity is known; each ``Fill``
  records the model's ``reference_price`` and the ``slippage_bps`` it applied.
* ``fill_model`` of market orders (replay): ``next-open`` fills at the open of the
  first bar strictly after the eligible time; ``vwap-bar`` at the typical price
  (h + l + c) / 3 of that same bar; ``close`` at the close of the bar that *contains*
  the eligible time ``e`` -- the last bar whose timestamp is <= ``e`` (the first bar if
  ``e`` is before every bar) -- stamped ``e`` (or that bar's time if later); what a
  participation cap leaves over fills at the closes of the following bars.
* ``latency_ms`` (replay): an order placed at ``t`` is eligible at ``e = t + latency``:
  only bars whose timestamp is strictly after ``e`` can fill it (``close``: the bar
  containing ``e``), so it may miss the bar it was meant for. Live mode ignores it.
* ``trade_through``: limit orders (and a triggered stop-limit's limit) fill only when
  the price goes through the limit, not on a touch (``fills`` module, ``strict``).
* ``max_participation``: a cap per bar as a fraction of its volume, shared by the
  orders filling on that bar; GTC remainders fill on the following bars, IOC cancels
  the remainder, FOK expires untouched.
* ``native_brackets`` (default True): `attach_bracket` is supported natively
  (``supports_brackets``): a protective sell stop and a sell limit target become active
  when the buy entry ends with fills, as an OCO pair (the first fill of one leg cancels
  the other; cancelling one leg cancels both), the stop optionally trailing. Legs are
  eligible from the bar after the entry's fill; when both legs could fill on one bar, the
  stop wins (it was registered first, and the path inside a bar is unknown: the
  conservative choice). False: the broker declares no support and the monitoring step
  emulates brackets with plain orders.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pandas as pd

from brokers.base.clock import SimulatedClock, WallClock, utc
from brokers.base.errors import InsufficientFundsError, InvalidOrderError, OrderNotFoundError
from brokers.base.protocol import BaseBroker
from brokers.base.types import (
    AccountInfo,
    Fill,
    Order,
    OrderResult,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
)
from brokers.paper.fills import FILL_MODELS, INF, Bar, Evaluation, Quote, after_trigger, evaluate
from brokers.paper.market import BarSeries
from brokers.paper.slippage import FixedBps, SlippageModel, slip

CASH_TOLERANCE = 1e-9  # relative: a buy may cost cash * (1 + 1e-9)
POSITION_TOLERANCE = 1e-12  # absolute: a sell may exceed the position by 1e-12
NO_TIME = -(2**63)  # before every bar


def _num(x: float) -> str:
    """A float for messages: 12 significant digits, Python's shortest repr."""
    return repr(float(f"{x:.12g}"))


def _slippage_bps(side: Side, quote: Quote) -> float:
    """How far the fill price is from the model's price, in bps, against the trader."""
    moved = quote.price / quote.reference_price - 1
    return (moved if side is Side.BUY else -moved) * 1e4


def _describe(order: Order) -> str:
    """How error messages name an order: side, quantity, symbol, type, client id."""
    return (
        f"{order.side.value} {_num(order.quantity)} {order.symbol} "
        f"{order.order_type.value} {order.time_in_force.value}, order {order.client_order_id}"
    )


@dataclass
class _Holding:
    """A spot position: quantity, weighted-average cost, realized pnl (fees apart)."""

    quantity: float = 0.0
    average_price: float = 0.0
    realized_pnl: float = 0.0

    def buy(self, quantity: float, price: float) -> None:
        total = self.quantity + quantity
        self.average_price = (self.average_price * self.quantity + price * quantity) / total
        self.quantity = total

    def sell(self, quantity: float, price: float) -> None:
        self.realized_pnl += (price - self.average_price) * quantity
        self.quantity -= quantity
        if self.quantity < POSITION_TOLERANCE:
            self.quantity = 0.0


@dataclass(frozen=True)
class _Attached:
    """A bracket attached to an entry: ``levels(average entry price)`` gives (stop, target)."""

    levels: Callable[[float], tuple[float | None, float | None]]
    stop_client_order_id: str
    target_client_order_id: str
    trailing: bool


@dataclass(eq=False)
class _OrderState:
    """The broker's mutable record of one order."""

    order: Order
    order_id: str
    seq: int
    after_ns: int  # eligible only for bars strictly later than this
    updated_at: pd.Timestamp
    remaining: float
    mode: OrderType  # current type: a triggered stop is a MARKET, a stop-limit a LIMIT
    status: OrderStatus = OrderStatus.NEW
    reason: str | None = None
    fills: list[Fill] = field(default_factory=list)
    version: int = 0  # bumped whenever the scheduled event is replaced or dropped
    next_bar: int = -1
    evaluated: bool = False  # a bar has been applied to it (fill model close: its first bar is done)
    bracket: _Attached | None = None  # an entry's bracket, activated when the entry ends with fills
    oco: tuple[str, ...] = ()  # order ids of the other legs of its OCO group
    trail: float | None = None  # a trailing stop's distance below the high water
    high_water: float = 0.0
    pending_stop: float | None = None  # replay: the trailing stop on the scheduled bar

    def result(self, currency: str) -> OrderResult:
        """The order as the venue reports it now."""
        executed = sum(f.quantity for f in self.fills)
        price = sum(f.quantity * f.price for f in self.fills) / executed if self.fills else None
        return OrderResult(
            order_id=self.order_id,
            client_order_id=self.order.client_order_id,
            status=self.status,
            executed_quantity=executed,
            executed_price=price,
            timestamp=self.updated_at,
            fees=sum(f.fee for f in self.fills),
            fee_currency=currency,
            reason=self.reason,
            fills=tuple(self.fills),
        )


class PaperBroker(BaseBroker):
    """A simulated spot venue; see the module docstring for the two modes."""

    waits_on_network = False  # in memory: placing a batch concurrently would only add task switches

    def __init__(
        self,
        *,
        cash: float,
        quote_currency: str = "USDT",
        maker_fee: float = 0.001,
        taker_fee: float = 0.001,
        slippage_bps: float = 0.0,
        clock: WallClock | SimulatedClock | None = None,
        max_participation: float | None = None,
        name: str = "paper",
        slippage: SlippageModel | None = None,
        fill_model: str = "next-open",
        latency_ms: float = 0.0,
        trade_through: bool = False,
        native_brackets: bool = True,
    ) -> None:
        if cash < 0:
            raise ValueError(f"cash must be >= 0, got {cash}")
        if max_participation is not None and not 0 < max_participation <= 1:
            raise ValueError(f"max_participation must be in (0, 1], got {max_participation}")
        if fill_model not in FILL_MODELS:
            raise ValueError(f"fill_model must be one of {', '.join(FILL_MODELS)}, got {fill_model!r}")
        if not 0 <= latency_ms < float("inf"):
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms}")
        self.name = name
        self.quote_currency = quote_currency
        self.maker_fee = maker_fee
        self.taker_fee = taker_fee
        self.slippage_bps = slippage_bps
        self.slippage: SlippageModel = slippage if slippage is not None else FixedBps(slippage_bps)
        self.fill_model = fill_model
        self.latency_ns = round(latency_ms * 1_000_000)
        self.trade_through = trade_through
        self.max_participation = max_participation
        self.supports_brackets = native_brackets
        self.clock: WallClock | SimulatedClock = clock if clock is not None else WallClock()
        self.connected = False
        self._replay = isinstance(self.clock, SimulatedClock)
        self._cash = float(cash)
        self._holdings: dict[str, _Holding] = {}
        self._marks: dict[str, float] = {}
        self._series: dict[str, BarSeries] = {}
        self._orders: dict[str, _OrderState] = {}
        self._by_client_id: dict[str, _OrderState] = {}
        self._seq = 0
        self._heap: list[tuple[int, int, int, str]] = []  # (bar ns, seq, version, order id)
        self._resting: dict[str, list[_OrderState]] = {}  # live mode
        self._volume_used: dict[tuple[str, int], float] = {}
        self._processed_ns = NO_TIME
        if isinstance(self.clock, SimulatedClock):
            self.clock.subscribe(self._on_clock)

    # ------------------------------------------------------------------ market data

    def add_market_data(self, symbol: str, bars: pd.DataFrame) -> None:
        """Load bars for ``symbol`` (columns timestamp, open, high, low, close, volume;
        sorted, unique). A second call appends bars that must all be later."""
        series = BarSeries.from_frame(bars)
        old = self._series.get(symbol)
        self._series[symbol] = old.extended(series) if old is not None else series
        if not self._replay and len(self._series[symbol]):
            self._marks[symbol] = float(self._series[symbol].close[-1])
        for state in self._open_orders(symbol):
            self._schedule(state)

    def set_price(self, symbol: str, price: float) -> None:
        """A new last price for ``symbol``. In live mode, resting orders are evaluated
        against it (as a bar with open = high = low = close = price), in placement
        order. In replay the bars drive fills and this only updates the mark."""
        self._marks[symbol] = float(price)
        if self._replay:
            return
        bar, now = Bar.flat(float(price)), self.clock.now()
        for state in list(self._resting.get(symbol, [])):  # a terminal order leaves the list
            if not state.status.is_terminal:  # an OCO leg may have been cancelled by its sibling's fill
                self._execute(state, bar, now, None)
        for state in self._resting.get(symbol, []):
            if state.trail is not None and state.mode is OrderType.STOP:
                self._raise_trailing(state, float(price))

    @property
    def cash(self) -> float:
        """Free cash in the quote currency."""
        return self._cash

    def position(self, symbol: str) -> float:
        """The quantity of ``symbol``'s base currency held (0.0 if none)."""
        holding = self._holdings.get(symbol)
        return holding.quantity if holding is not None else 0.0

    # ------------------------------------------------------------------ BaseBroker

    async def connect(self) -> None:
        """Nothing to connect to; marks the broker connected."""
        self.connected = True

    async def close(self) -> None:
        """Nothing to release; marks the broker disconnected."""
        self.connected = False

    async def get_account_info(self) -> AccountInfo:
        """Balances (quote cash and each held base) and equity at the last prices."""
        balances = {self.quote_currency: self._cash}
        equity = self._cash
        for symbol, holding in self._holdings.items():
            if holding.quantity > 0:
                balances[symbol.split("/")[0]] = holding.quantity
                equity += holding.quantity * self._marks.get(symbol, holding.average_price)
        return AccountInfo(balances=balances, equity=equity, quote_currency=self.quote_currency)

    async def place_order(self, order: Order) -> OrderResult:
        """Accept ``order``. Replay: NEW, filled as the clock advances. Live: filled at
        once if it can be, raising ``InsufficientFundsError`` (nothing recorded) when the
        account cannot pay. Raises ``InvalidOrderError`` for a bad symbol or a
        duplicate client id."""
        self._validate(order)
        if self._replay:
            placed = utc(order.placed_at) if order.placed_at is not None else self.clock.now()
            state = self._register(order, placed)
            self._schedule(state)
        else:
            state = self._place_live(order)
        return state.result(self.quote_currency)

    async def cancel_order(self, order_id: str, symbol: str) -> OrderResult:
        """Cancel an open order; ``InvalidOrderError`` if it is already terminal."""
        state = self._find(order_id, symbol)
        if state.status.is_terminal:
            raise InvalidOrderError(
                f"cannot cancel order {order_id}: it is {state.status.value} ({_describe(state.order)})"
            )
        now = self.clock.now()
        self._finish(state, OrderStatus.CANCELED, now, f"canceled by request ({_describe(state.order)})")
        self._cancel_siblings(state, now, f"OCO: the other leg {state.order.client_order_id} was canceled")
        return state.result(self.quote_currency)

    # ------------------------------------------------------------------ brackets (native OCO)

    def attach_bracket(
        self,
        order_id: str,
        symbol: str,
        *,
        levels: Callable[[float], tuple[float | None, float | None]],
        stop_client_order_id: str,
        target_client_order_id: str,
        trailing: bool = False,
    ) -> None:
        """Attach a protective stop and a target to the buy entry ``order_id``: when the
        entry ends with fills, ``levels(its average price)`` gives (stop, target) (either
        may be None) and the legs are placed for the quantity filled, as an OCO pair.
        Attaching to an entry that already ended activates at once; a bracket whose legs
        exist already (a restart) is not placed twice."""
        if not self.supports_brackets:
            raise InvalidOrderError(f"{self.name}: brackets are not supported natively")
        state = self._find(order_id, symbol)
        if state.order.side is not Side.BUY:
            raise InvalidOrderError(f"a bracket protects a buy entry, not {_describe(state.order)}")
        if stop_client_order_id in self._by_client_id or target_client_order_id in self._by_client_id:
            return
        state.bracket = _Attached(levels, stop_client_order_id, target_client_order_id, trailing)
        if state.status.is_terminal:
            self._activate(state, state.updated_at if self._replay else self.clock.now())

    def _activate(self, entry: _OrderState, when: pd.Timestamp) -> None:
        """Place an ended entry's bracket legs (stop first: on a bar that reaches both, it wins)."""
        attached, entry.bracket = entry.bracket, None
        if attached is None or not entry.fills:
            return
        quantity = sum(f.quantity for f in entry.fills)
        average = sum(f.quantity * f.price for f in entry.fills) / quantity
        stop, target = attached.levels(average)
        order = entry.order
        legs: list[_OrderState] = []
        if stop is not None:
            leg = self._register(Order(order.symbol, Side.SELL, OrderType.STOP, quantity,
                                       attached.stop_client_order_id, stop_price=stop, placed_at=when), when)
            if attached.trailing:
                leg.trail, leg.high_water = average - stop, average
            legs.append(leg)
        if target is not None:
            legs.append(self._register(Order(order.symbol, Side.SELL, OrderType.LIMIT, quantity,
                                             attached.target_client_order_id, price=target, placed_at=when), when))
        for leg in legs:
            leg.oco = tuple(o.order_id for o in legs if o is not leg)
        for leg in legs:
            if leg.status.is_terminal:  # the other leg filled at once (live)
                continue
            if self._replay:
                self._schedule(leg)
            else:
                self._execute(leg, Bar.flat(self._marks[order.symbol]), when, None)
                if not leg.status.is_terminal:
                    self._resting.setdefault(order.symbol, []).append(leg)

    def _cancel_siblings(self, state: _OrderState, when: pd.Timestamp, reason: str) -> None:
        for order_id in state.oco:
            sibling = self._orders[order_id]
            if not sibling.status.is_terminal:
                self._finish(sibling, OrderStatus.CANCELED, when, f"{reason} ({_describe(sibling.order)})")

    def _raise_trailing(self, state: _OrderState, price: float) -> None:
        """Live: a new high moves a trailing stop up (never down)."""
        state.high_water = max(state.high_water, price)
        assert state.trail is not None and state.order.stop_price is not None
        stop = state.high_water - state.trail
        if stop > state.order.stop_price:
            state.order = replace(state.order, stop_price=stop)

    async def get_order_status(self, order_id: str, symbol: str) -> OrderResult:
        """The order now; ``OrderNotFoundError`` if this venue does not know it."""
        return self._find(order_id, symbol).result(self.quote_currency)

    async def get_order_by_client_id(self, client_order_id: str, symbol: str) -> OrderResult | None:
        """The order bearing ``client_order_id`` on ``symbol``, or None."""
        state = self._by_client_id.get(client_order_id)
        if state is None or state.order.symbol != symbol:
            return None
        return state.result(self.quote_currency)

    async def get_positions(self) -> list[Position]:
        """Every non-zero position, with average cost, last price and realized pnl."""
        return [
            Position(
                symbol=symbol,
                quantity=holding.quantity,
                average_price=holding.average_price,
                market_price=self._marks.get(symbol),
                realized_pnl=holding.realized_pnl,
            )
            for symbol, holding in self._holdings.items()
            if holding.quantity > 0
        ]

    # ------------------------------------------------------------------ order intake

    def _validate(self, order: Order) -> None:
        base, slash, quote = order.symbol.partition("/")
        if not slash or not base or not quote:
            raise InvalidOrderError(f"symbol must be BASE/QUOTE, got {order.symbol!r} ({_describe(order)})")
        if quote != self.quote_currency:
            raise InvalidOrderError(
                f"quote currency {quote} is not this account's {self.quote_currency} ({_describe(order)})"
            )
        if order.symbol not in self._series and order.symbol not in self._marks:
            raise InvalidOrderError(
                f"unknown symbol {order.symbol}: no market data or price ({_describe(order)})"
            )
        if order.client_order_id in self._by_client_id:
            raise InvalidOrderError(f"Duplicate order sent: {order.client_order_id} ({_describe(order)})")

    def _register(self, order: Order, placed: pd.Timestamp) -> _OrderState:
        self._seq += 1
        state = _OrderState(
            order=order,
            order_id=f"paper-{self._seq}",
            seq=self._seq,
            after_ns=placed.value + (self.latency_ns if self._replay else 0),
            updated_at=placed,
            remaining=order.quantity,
            mode=order.order_type,
        )
        self._orders[state.order_id] = state
        self._by_client_id[order.client_order_id] = state
        return state

    def _place_live(self, order: Order) -> _OrderState:
        """Live mode: check the immediate fill (raising before anything is recorded),
        then record and execute it; what does not fill rests."""
        now = self.clock.now()
        price = self._marks.get(order.symbol)
        if price is None:
            raise InvalidOrderError(f"no price yet for {order.symbol} ({_describe(order)})")
        bar = Bar.flat(price)
        quote = self._evaluate(order, order.order_type, bar).quote
        if quote is not None:
            quote = self._slipped(order.side, quote, bar, order.quantity)
            problem = self._funds_problem(
                order, order.quantity, quote.price, self._fee(order.quantity, quote)
            )
            if problem is not None:
                raise InsufficientFundsError(problem)
        state = self._register(order, now)
        self._execute(state, bar, now, None)
        if not state.status.is_terminal:
            self._resting.setdefault(order.symbol, []).append(state)
        return state

    def _find(self, order_id: str, symbol: str) -> _OrderState:
        state = self._orders.get(order_id)
        if state is None or state.order.symbol != symbol:
            raise OrderNotFoundError(f"order {order_id} on {symbol} not found")
        return state

    def _open_orders(self, symbol: str) -> list[_OrderState]:
        return [s for s in self._orders.values() if s.order.symbol == symbol and not s.status.is_terminal]

    # ------------------------------------------------------------------ replay

    def _schedule(self, state: _OrderState) -> None:
        """Put ``state`` on the event heap at the first bar on which it may fill (for
        IOC / FOK: its first eligible bar, whatever happens there)."""
        state.version += 1
        series = self._series.get(state.order.symbol)
        if not self._replay or series is None:
            return
        order = state.order
        if self.fill_model == "close" and state.mode is OrderType.MARKET and not state.evaluated:
            bar = max(series.index_after(state.after_ns) - 1, 0)  # the bar containing the eligible time
            if len(series):
                self._push(state, bar, max(state.after_ns, int(series.ts[bar])))
            return
        start = series.index_after(max(state.after_ns, self._processed_ns))
        if state.trail is not None and state.mode is OrderType.STOP:
            assert order.stop_price is not None
            found = series.first_trailing_stop(start, order.stop_price, state.high_water, state.trail)
            if found is not None:
                state.pending_stop, state.high_water = found[1], found[2]
                self._push(state, found[0], int(series.ts[found[0]]))
            return
        if order.time_in_force is TimeInForce.GTC:
            bar = series.first_event(
                start, state.mode, order.side, order.price, order.stop_price, self.trade_through
            )
        else:
            bar = start if start < len(series) else None
        if bar is not None:
            self._push(state, bar, int(series.ts[bar]))

    def _push(self, state: _OrderState, bar: int, at_ns: int) -> None:
        """Schedule ``state`` on bar ``bar``, processed (and stamped) at ``at_ns``."""
        state.next_bar = bar
        heapq.heappush(self._heap, (at_ns, state.seq, state.version, state.order_id))

    def _on_clock(self, t: pd.Timestamp) -> None:
        """Clock listener: process every scheduled event on a bar at or before ``t``."""
        t_ns = utc(t).value
        if t_ns <= self._processed_ns:
            return
        heap = self._heap
        while heap and heap[0][0] <= t_ns:
            at_ns, _, version, order_id = heapq.heappop(heap)
            state = self._orders[order_id]
            if state.version != version or state.status.is_terminal:
                continue
            series = self._series[state.order.symbol]
            bar_index = state.next_bar
            if state.pending_stop is not None and state.mode is OrderType.STOP:
                state.order = replace(state.order, stop_price=state.pending_stop)
            self._execute(state, series.bar(bar_index), pd.Timestamp(at_ns, tz="UTC"), bar_index)
            state.evaluated = True
            if not state.status.is_terminal:
                state.after_ns = int(series.ts[bar_index])
                self._schedule(state)
        self._processed_ns = t_ns
        for symbol, series in self._series.items():
            seen = series.index_after(t_ns)
            if seen:
                self._marks[symbol] = float(series.close[seen - 1])

    # ------------------------------------------------------------------ execution

    def _execute(self, state: _OrderState, bar: Bar, when: pd.Timestamp, bar_index: int | None) -> None:
        """Apply one bar to an open order: fill (in full or in part), refuse, expire, or
        leave it open. ``bar_index`` keys the participation budget (None: live tick)."""
        order = state.order
        evaluation = self._evaluate(order, state.mode, bar)
        if evaluation.triggered:
            state.mode = after_trigger(state.mode)
        quantity = self._fillable(state, evaluation, bar, bar_index)
        single_bar = order.time_in_force is not TimeInForce.GTC
        if order.time_in_force is TimeInForce.FOK and quantity < state.remaining:
            reason = "FOK order could not fill entirely on its first eligible bar"
            self._finish(state, OrderStatus.EXPIRED, when, f"{reason} ({_describe(order)})")
            return
        if evaluation.quote is None or quantity <= 0:
            if single_bar:
                self._end_unfilled(state, when)
            return
        quote = self._slipped(order.side, evaluation.quote, bar, quantity)
        problem = self._funds_problem(order, quantity, quote.price, self._fee(quantity, quote))
        if problem is not None:
            status = OrderStatus.CANCELED if state.fills else OrderStatus.REJECTED
            self._finish(state, status, when, problem)
            return
        self._fill(state, quantity, quote, when, bar_index)
        if state.remaining <= 0:
            self._finish(state, OrderStatus.FILLED, when, None)
        elif single_bar:
            self._end_unfilled(state, when)
        else:
            state.status = OrderStatus.PARTIALLY_FILLED

    def _evaluate(self, order: Order, mode: OrderType, bar: Bar) -> Evaluation:
        """The fill rule of ``mode`` on ``bar``, before slippage."""
        return evaluate(
            mode, order.side, order.price, order.stop_price, bar, 0.0,
            fill_model=self.fill_model if self._replay else "next-open",  # live: the last price
            strict=self.trade_through,
        )

    def _slipped(self, side: Side, quote: Quote, bar: Bar, quantity: float) -> Quote:
        """``quote`` moved by the slippage model for a fill of ``quantity`` (if it is a
        market or stop fill); ``reference_price`` stays the model's price."""
        if not quote.slippable:
            return quote
        price = slip(side, quote.reference_price, self.slippage.fraction(bar, quantity))
        return Quote(price, quote.reference_price, quote.is_maker, slippable=True)

    def _fillable(self, state: _OrderState, evaluation: Evaluation, bar: Bar, bar_index: int | None) -> float:
        """How much of the order may fill on this bar: all of it, or the participation
        budget the bar has left (shared by the orders filled on it)."""
        if evaluation.quote is None:
            return 0.0
        if self.max_participation is None or bar_index is None or bar.volume == INF:
            return state.remaining
        used = self._volume_used.get((state.order.symbol, bar_index), 0.0)
        budget = self.max_participation * bar.volume - used
        if budget >= state.remaining * (1 - POSITION_TOLERANCE):
            return state.remaining
        return max(budget, 0.0)

    def _fee(self, quantity: float, quote: Quote) -> float:
        return (self.maker_fee if quote.is_maker else self.taker_fee) * quantity * quote.price

    def _funds_problem(self, order: Order, quantity: float, price: float, fee: float) -> str | None:
        """Why the account cannot take this fill (the InsufficientFundsError message),
        or None if it can."""
        if order.side is Side.BUY:
            cost = quantity * price + fee
            if cost <= self._cash * (1 + CASH_TOLERANCE):
                return None
            return (
                f"insufficient funds: buy {_num(quantity)} {order.symbol} at {_num(price)} needs "
                f"{_num(cost)} {self.quote_currency} incl. fee {_num(fee)}, cash is "
                f"{_num(self._cash)} {self.quote_currency} (order {order.client_order_id})"
            )
        held = self.position(order.symbol)
        if quantity <= held + POSITION_TOLERANCE:
            return None
        return (
            f"insufficient position: sell {_num(quantity)} {order.symbol} but position is "
            f"{_num(held)} (order {order.client_order_id})"
        )

    def _fill(
        self, state: _OrderState, quantity: float, quote: Quote, when: pd.Timestamp, bar_index: int | None
    ) -> None:
        """Book one fill: cash, position, fees, participation used, the order's fills."""
        order = state.order
        fee = self._fee(quantity, quote)
        holding = self._holdings.setdefault(order.symbol, _Holding())
        if order.side is Side.BUY:
            self._cash = max(self._cash - quantity * quote.price - fee, 0.0)
            holding.buy(quantity, quote.price)
        else:
            self._cash += quantity * quote.price - fee
            holding.sell(quantity, quote.price)
        if bar_index is not None and self.max_participation is not None:
            key = (order.symbol, bar_index)
            self._volume_used[key] = self._volume_used.get(key, 0.0) + quantity
        state.remaining = 0.0 if quantity >= state.remaining else state.remaining - quantity
        state.updated_at = when
        self._cancel_siblings(state, when, f"OCO: the other leg {order.client_order_id} filled")
        state.fills.append(
            Fill(
                order_id=state.order_id,
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                side=order.side,
                quantity=quantity,
                price=quote.price,
                fee=fee,
                fee_currency=self.quote_currency,
                timestamp=when,
                is_maker=quote.is_maker,
                reference_price=quote.reference_price,
                slippage_bps=_slippage_bps(order.side, quote),
            )
        )

    def _end_unfilled(self, state: _OrderState, when: pd.Timestamp) -> None:
        """An IOC / FOK order after its one bar: EXPIRED if nothing filled, else the
        remainder is CANCELED."""
        order = state.order
        tif = order.time_in_force.value
        if state.fills:
            reason = f"{tif} remainder {_num(state.remaining)} canceled after its first eligible bar"
            self._finish(state, OrderStatus.CANCELED, when, f"{reason} ({_describe(order)})")
        else:
            reason = f"{tif} order not filled on its first eligible bar"
            self._finish(state, OrderStatus.EXPIRED, when, f"{reason} ({_describe(order)})")

    def _finish(
        self, state: _OrderState, status: OrderStatus, when: pd.Timestamp, reason: str | None
    ) -> None:
        """Move an order to a terminal status and drop its scheduled event."""
        state.status = status
        state.reason = reason
        state.updated_at = max(when, state.updated_at)
        state.version += 1
        resting = self._resting.get(state.order.symbol)
        if resting is not None and state in resting:
            resting.remove(state)
        if state.bracket is not None:
            self._activate(state, state.updated_at)
