"""The one ccxt -> broker error table, and credentials kept out of every message and log line."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
import ccxt
import pytest

from brokers.base import (
    BrokerConnectionError,
    BrokerError,
    InsufficientFundsError,
    InvalidOrderError,
    Order,
    OrderNotFoundError,
    OrderType,
    RateLimitError,
    Side,
)
from brokers.ccxt import DuplicateClientOrderIdError, VenueAuthenticationError, VenueBannedError, profile_for
from brokers.ccxt.errors import mapped_errors, redact, rule_for, translate
from brokers.emulator import EmulatorHandle
from tests.brokers.ccxt.conftest import API_KEY, SECRET, SYMBOL, make_broker

BINANCE = profile_for("binance")
BAN = ("binance 418 I'm a teapot "
       ' {"code":-1003,"msg":"Way too much request weight used; IP banned until '
       '1700000000000. Please use WebSocket Streams for live updates to avoid bans."}')


def caused_by(exc: Exception, cause: Exception) -> Exception:
    """``exc`` as ccxt raises it ``from`` a transport error."""
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ccxt.InsufficientFunds("binance Account has insufficient balance for requested action."),
         InsufficientFundsError),
        (ccxt.OrderNotFound("binance Order does not exist."), OrderNotFoundError),
        (ccxt.InvalidOrder('binance {"code":-2010,"msg":"Duplicate order sent."}'), DuplicateClientOrderIdError),
        (ccxt.InvalidOrder("binance Filter failure: LOT_SIZE"), InvalidOrderError),
        (ccxt.OrderImmediatelyFillable("binance Stop price would trigger immediately."), InvalidOrderError),
        (ccxt.BadSymbol("binance does not have market symbol XRP/BTC"), InvalidOrderError),
        (ccxt.BadRequest('binance {"code":-1013,"msg":"Filter failure: NOTIONAL"}'), InvalidOrderError),
        (ccxt.AuthenticationError("binance Signature for this request is not valid."), VenueAuthenticationError),
        (ccxt.PermissionDenied("binance This account may not place or cancel orders."), VenueAuthenticationError),
        (ccxt.DDoSProtection("binance 429 Too Many Requests"), RateLimitError),
        (ccxt.DDoSProtection(BAN), VenueBannedError),
        (caused_by(ccxt.ExchangeError("binance POST http://127.0.0.1/api/v3/order"),
                   aiohttp.ClientPayloadError("Response payload is not completed")), BrokerConnectionError),
        (caused_by(ccxt.ExchangeNotAvailable("binance POST http://127.0.0.1/api/v3/order"),
                   aiohttp.ServerDisconnectedError()), BrokerConnectionError),
        (ccxt.RateLimitExceeded("binance -1003"), RateLimitError),
        (ccxt.RequestTimeout("binance GET http://127.0.0.1/api/v3/order request timeout"), BrokerConnectionError),
        (ccxt.ExchangeNotAvailable("binance 503"), BrokerConnectionError),
        (ccxt.NetworkError("binance connection reset"), BrokerConnectionError),
        (ccxt.OperationFailed('binance {"code":-1001,"msg":"Internal error"}'), BrokerConnectionError),
        (ccxt.InvalidNonce("binance -1021 timestamp outside recvWindow"), BrokerConnectionError),
        (ccxt.NotSupported("binance fetchPositions() is not supported"), BrokerError),
        (ccxt.ExchangeError("binance something else"), BrokerError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.__name__,
)
def test_error_table(raised: Exception, expected: type[BrokerError]) -> None:
    mapped = translate(raised, "place buy 1.0 ETH/BTC market GTC, order tp-1", is_duplicate=BINANCE.is_duplicate)
    assert type(mapped) is expected
    assert "tp-1" in str(mapped) and "ETH/BTC" in str(mapped)
    assert mapped.retryable is (expected in (RateLimitError, VenueBannedError, BrokerConnectionError))


def test_a_ban_names_its_end_and_a_broken_answer_says_to_look_up_first() -> None:
    banned = translate(ccxt.DDoSProtection(BAN), "place buy 1.0 ETH/BTC market GTC, order tp-1")
    assert isinstance(banned, VenueBannedError)
    assert banned.banned_until == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert "banned until 2023-11-14T22:13:20+00:00" in str(banned)
    broken = translate(caused_by(ccxt.ExchangeError("binance POST url"), aiohttp.ClientPayloadError("cut")),
                       "place buy 1.0 ETH/BTC market GTC, order tp-2")
    assert "look the order up by client id" in str(broken)


def test_order_not_found_wins_over_its_parent_invalid_order() -> None:
    rule = rule_for(ccxt.OrderNotFound("x"))
    assert rule is not None and rule.broker_error is OrderNotFoundError


def test_mapped_errors_chains_the_original() -> None:
    with pytest.raises(InsufficientFundsError) as caught, mapped_errors("sell 2 ETH/BTC"):
        raise ccxt.InsufficientFunds("binance Account has insufficient balance for requested action.")
    assert isinstance(caught.value.__cause__, ccxt.InsufficientFunds)
    assert caught.value.broker_message.endswith("insufficient balance for requested action.")


def test_redact_blanks_credentials_and_signatures() -> None:
    text = f"GET /api/v3/account?timestamp=1&signature=ab12cd {{'X-MBX-APIKEY': '{API_KEY}'}} {SECRET}"
    clean = redact(text, (API_KEY, SECRET, None))
    assert API_KEY not in clean and SECRET not in clean and "ab12cd" not in clean
    assert clean.count("***") == 3
    assert redact("{'X-BAPI-SIGN': 'a1b2c3', 'X-BAPI-API-KEY': 'k'}", ()) == "{'X-BAPI-SIGN': '***', 'X-BAPI-API-KEY': 'k'}"


def _everything_said(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + getattr(exc, "broker_message", "")


PLACE = {"binance": "POST /api/v3/order", "bybit": "POST /v5/order/create"}
KEY_HEADER = {"binance": "X-MBX-APIKEY", "bybit": "X-BAPI-API-KEY"}


@pytest.mark.anyio
async def test_no_message_or_log_line_carries_the_secret_or_the_key(
    emulator: EmulatorHandle, venue: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    said: list[str] = []

    async def expect_failure(action: Callable[[], object]) -> None:
        with pytest.raises(BrokerError) as caught:
            await action()  # type: ignore[misc]
        said.append(_everything_said(caught.value))

    def market(quantity: float, coid: str) -> Order:
        return Order(SYMBOL, Side.BUY, OrderType.MARKET, quantity, coid)

    async with make_broker(emulator) as broker:
        said.append(repr(broker))
        await broker.place_order(market(1.0, "tp-canary-0"))
        await expect_failure(lambda: broker.place_order(market(500.0, "tp-canary-1")))
        await expect_failure(lambda: broker.place_order(market(0.005, "tp-canary-2")))
        emulator.engine.faults.update(fail_next=1)
        await expect_failure(lambda: broker.get_account_info())
        emulator.engine.faults.update(rate_limit_next=1)
        await expect_failure(lambda: broker.get_order_status("1", SYMBOL))
        await expect_failure(lambda: broker.cancel_order("999999", SYMBOL))
        emulator.engine.faults.update(drop_mid_response_next=1, fault_on=PLACE[venue])
        await expect_failure(lambda: broker.place_order(market(1.0, "tp-canary-3")))
        emulator.engine.faults.update(ban_s=30)
        await expect_failure(lambda: broker.get_account_info())
        emulator.engine.faults["banned_until_ms"] = 0  # lifted
    async with make_broker(emulator, secret=SECRET[::-1]) as wrong:  # a wrong secret must not leak either
        await expect_failure(lambda: wrong.get_account_info())
        said.append(repr(wrong))

    said.append(caplog.text)
    said.extend(r.getMessage() for r in caplog.records)
    out = capsys.readouterr()
    said.extend((out.out, out.err))
    everything = "\n".join(said)
    assert len(said) > 10 and "tp-canary-1" in everything
    for credential in (SECRET, SECRET[::-1], API_KEY):
        assert credential not in everything
    wire = [r.getMessage() for r in caplog.records if r.name == "brokers.ccxt.wire"]
    assert wire and any(KEY_HEADER[venue] in line and "***" in line for line in wire)
