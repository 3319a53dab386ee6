"""Alerts through the real Apprise library to a local HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from risk.alerts import Alerter, alert_urls_from_env, redact


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_alert_is_delivered_as_json(receiver):
    url, received = receiver
    alert = Alerter([url]).notify("max_daily_loss", "Limit breached: max_daily_loss",
                                  "loss 0.031 > 0.030 of equity on BTC/USDT (flow run abc)", level="failure")
    assert alert.delivered and alert.sent == (redact(url),)
    assert len(received) == 1 and received[0]["path"] == "/alerts"
    payload = received[0]["json"]
    assert payload["title"] == "Limit breached: max_daily_loss"
    assert "0.031 > 0.030" in payload["message"] and payload["type"] == "failure"


def test_unreachable_channel_is_reported_not_raised_and_others_still_get_it(receiver):
    url, received = receiver
    dead = f"json://127.0.0.1:{closed_port()}/alerts"
    alert = Alerter([dead, url]).notify("k", "t", "b")
    assert len(received) == 1
    assert alert.sent == (redact(url),) and [c for c, _ in alert.failed] == [redact(dead)]
    assert not alert.delivered


def test_same_key_is_throttled_within_the_window(receiver):
    url, received = receiver
    now = [1000.0]
    alerter = Alerter([url], throttle_s=60, clock=lambda: now[0])
    assert not alerter.notify("k", "t", "b").throttled
    assert alerter.notify("k", "t", "b").throttled
    assert not alerter.notify("other", "t", "b").throttled
    now[0] += 60
    assert not alerter.notify("k", "t", "b").throttled
    assert len(received) == 3


def test_invalid_url_and_level():
    alert = Alerter(["notascheme"]).notify("k", "t", "b")
    assert alert.failed and "not a valid Apprise URL" in alert.failed[0][1]
    with pytest.raises(ValueError, match="alert level"):
        Alerter([]).notify("k", "t", "b", level="loud")


def test_urls_from_env_and_redaction():
    assert alert_urls_from_env({"TRADPAL_ALERT_URLS": " json://a:1/x , slack://tok/en "}) == [
        "json://a:1/x", "slack://tok/en"]
    assert redact("slack://T000/B000/SECRETTOKEN") == "slack://…"  # the "host" of many schemes is a token
    assert "SECRET" not in redact("json://user:SECRET@host:8080/path")
