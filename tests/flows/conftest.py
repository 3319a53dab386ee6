"""Fixtures of the flow tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def approval_env(monkeypatch, receiver):
    """Alerts to the local receiver (its received requests returned), approval above a
    notional of 1,000, 60 s to answer."""
    url, received = receiver
    monkeypatch.setenv("TRADPAL_ALERT_URLS", url)
    monkeypatch.setenv("TRADPAL_APPROVAL_NOTIONAL", "1000")
    monkeypatch.setenv("TRADPAL_APPROVAL_TIMEOUT_S", "60")
    return received
