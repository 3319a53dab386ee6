"""Alerts: one `Alerter.notify()` that sends to every configured Apprise channel, isolates
each channel's failure, throttles repeats, and never blocks or fails trading.

Channels are Apprise URLs (``json://host:port/path``, ``slack://...``, ``mailto://...``)
from configuration, ``TRADPAL_ALERT_URLS`` (comma-separated), or a Prefect Secret block
named by the configuration's ``alerts.secret_block`` or ``TRADPAL_ALERT_URLS_BLOCK``
(its value: URLs separated by commas or new lines, or a JSON list). URLs carry tokens: they
are only ever shown redacted (`redact`), and a channel's error text is scrubbed of them
before it is logged or recorded. Apprise's ``notify()``
returns False for an unreachable target rather than raising: that is checked, logged and
returned per channel, and recorded by the caller (see `Alert.failed`).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger("tradpal.alerts")
LEVELS = {"info", "success", "warning", "failure"}


@dataclass(frozen=True)
class Alert:
    """One notification and what became of it on each channel."""

    key: str
    title: str
    body: str
    level: str
    sent: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()  # (channel, why)
    throttled: bool = False

    @property
    def delivered(self) -> bool:
        return bool(self.sent) and not self.failed


def alert_urls_from_env(env: dict[str, str] | None = None) -> list[str]:
    raw = (env if env is not None else os.environ).get("TRADPAL_ALERT_URLS", "")
    return [u.strip() for u in raw.split(",") if u.strip()]


def alert_urls_from_secret(name: str, key: str) -> list[str]:
    """The URLs held by the Prefect Secret block ``name`` (``key``: the setting that named
    it, for the error). ``ConfigError`` (naming the key and the block, never the value)
    when the block cannot be loaded or holds no URL."""
    from prefect.blocks.system import Secret

    from tradpal.errors import ConfigError

    try:
        value = Secret.load(name, _sync=True).get()  # type: ignore[call-arg]
    except Exception as exc:  # noqa: BLE001 - any failure: the block is not usable
        raise ConfigError(f"{key}: cannot load the Prefect Secret block {name!r} ({type(exc).__name__})") from None
    items = value if isinstance(value, list) else re.split(r"[,\n]", value) if isinstance(value, str) else None
    urls = [str(u).strip() for u in items or [] if str(u).strip()]
    if not urls:
        raise ConfigError(f"{key}: the Prefect Secret block {name!r} holds no alert URL "
                          "(expected URLs separated by commas or new lines, or a list)")
    return urls


def alerter_from_env(risk=None, env: dict[str, str] | None = None) -> Alerter | None:
    """An `Alerter` over the risk configuration's ``alerts.urls``, ``TRADPAL_ALERT_URLS`` and
    the Secret block named by ``alerts.secret_block`` or ``TRADPAL_ALERT_URLS_BLOCK`` (throttle:
    the configuration's, else ``TRADPAL_ALERT_THROTTLE_S``, default 300 s), or None when no
    channel is configured."""
    env = env if env is not None else dict(os.environ)
    urls = [*(risk.alerts.urls if risk is not None else []), *alert_urls_from_env(env)]
    block = risk.alerts.secret_block if risk is not None and risk.alerts.secret_block else None
    if block:
        urls += alert_urls_from_secret(block, "alerts.secret_block")
    elif env.get("TRADPAL_ALERT_URLS_BLOCK", "").strip():
        urls += alert_urls_from_secret(env["TRADPAL_ALERT_URLS_BLOCK"].strip(), "TRADPAL_ALERT_URLS_BLOCK")
    if not urls:
        return None
    default = float(os.environ.get("TRADPAL_ALERT_THROTTLE_S", "300"))
    return Alerter(urls, throttle_s=risk.alerts.throttle_s if risk is not None else default)


_HOST = re.compile(r"^(localhost|[0-9.]+|\[[0-9a-f:]+\]|[a-z0-9-]+(\.[a-z0-9-]+)+)(:\d{1,5})?$", re.IGNORECASE)


def redact(url: str) -> str:
    """A channel as it may appear in logs: its scheme, and its host when that is a host
    name or address (many Apprise schemes put a token where the host goes: slack://TOKEN/...)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(not an Apprise URL)"
    host = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/…" if _HOST.match(host) else f"{scheme}://…"


def scrub(text: str, url: str) -> str:
    """``text`` without ``url`` or any longer piece of it (an error message may quote it)."""
    text = text.replace(url, redact(url))
    for piece in sorted(set(re.split(r"[/:@?&=#,]+", url.partition("://")[2])), key=len, reverse=True):
        if len(piece) >= 6 and not _HOST.match(piece):
            text = text.replace(piece, "***")
    return text


class _ScrubUrls(logging.Filter):
    """Apprise (and urllib3 under it) log the URL they post to, at DEBUG: every record of
    those loggers is scrubbed of the URLs any `Alerter` holds before a handler sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.urls:
            message = record.getMessage()
            clean = message
            for url in self.urls:
                clean = scrub(clean, url)
            if clean != message:
                record.msg, record.args = clean, None
        return True


_SCRUB = _ScrubUrls()
for _name in ("apprise", "urllib3.connectionpool", "requests"):  # the ones that log a request's URL
    logging.getLogger(_name).addFilter(_SCRUB)


@dataclass
class Alerter:
    """Sends alerts to every URL; the same ``key`` is not repeated within ``throttle_s``."""

    urls: Iterable[str]
    throttle_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _last: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.urls = list(self.urls)
        _SCRUB.urls.update(self.urls)

    def notify(self, key: str, title: str, body: str, *, level: str = "warning") -> Alert:
        if level not in LEVELS:
            raise ValueError(f"alert level must be one of {sorted(LEVELS)}, got {level!r}")
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.throttle_s:
            return Alert(key, title, body, level, throttled=True)
        self._last[key] = now
        sent, failed = [], []
        for url in self.urls:
            ok, why = _send_one(url, title, body, level)
            (sent.append(redact(url)) if ok else failed.append((redact(url), why)))
            if not ok:
                log.warning("alert %r not delivered to %s: %s", key, redact(url), why)
        return Alert(key, title, body, level, tuple(sent), tuple(failed))


def _send_one(url: str, title: str, body: str, level: str) -> tuple[bool, str]:
    """Send to one channel; never raises."""
    import apprise

    try:
        app = apprise.Apprise()
        if not app.add(url):
            return False, "not a valid Apprise URL"
        ok = app.notify(title=title, body=body, notify_type=getattr(apprise.NotifyType, level.upper()))
        return bool(ok), "" if ok else "the channel did not accept the notification"
    except Exception as exc:  # a channel's failure must never reach trading
        return False, scrub(f"{type(exc).__name__}: {exc}", url)


def breach_alerts(alerter: Alerter, step: str, rejected, orders, *, flow_run_id: str | None) -> list[Alert]:
    """One alert per refused order of a risk step (pre-checks): what happened, which check
    and its value against the threshold (the check's reason says both), symbol, strategy,
    and the Prefect flow run. Throttled per (check, symbol). Also emitted as the Prefect
    event ``tradpal.risk.breach`` so automations can react."""
    info = orders.set_index("client_order_id")[["symbol", "strategy", "side", "quantity"]].to_dict("index") \
        if len(orders) and "client_order_id" in orders else {}
    alerts = []
    for coid, sid, reason in zip(rejected["client_order_id"], rejected["signal_id"], rejected["reason"], strict=True):
        o = info.get(coid, {})
        rule = str(reason).split(":")[0].split(" (")[0]
        title = f"TradPal risk breach at {step}: {rule}"
        body = (f"Order {coid} for signal {sid} refused: {reason}. Symbol {o.get('symbol', '?')}, strategy "
                f"{o.get('strategy', '?')}, {o.get('side', '?')} {o.get('quantity', '?')}. Flow run {flow_run_id}.")
        alerts.append(alerter.notify(f"{step}:{rule}:{o.get('symbol')}", title, body, level="warning"))
        _emit_breach(step, rule, reason, o, sid, flow_run_id)
    return alerts


def _emit_breach(step: str, rule: str, reason: str, order: dict, signal_id: str, flow_run_id: str | None) -> None:
    try:
        from prefect.context import FlowRunContext
        from prefect.events import emit_event

        if FlowRunContext.get() is None:  # outside a flow run there is no API to tell (and none to start)
            return
        emit_event(event="tradpal.risk.breach", resource={"prefect.resource.id": f"tradpal.risk.{step}"},
                   payload={"rule": rule, "reason": str(reason), "signal_id": signal_id,
                            "symbol": order.get("symbol"), "strategy": order.get("strategy"),
                            "flow_run_id": flow_run_id})
    except Exception as exc:  # events are best effort: never fail trading for them
        log.warning("could not emit tradpal.risk.breach: %s", exc)
