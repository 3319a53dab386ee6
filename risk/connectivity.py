"""The connectivity breaker: N consecutive broker errors halt the broker, or move the
traffic to a configured backup route.

`ConnectivityGuard` wraps the broker the pipeline talks to (it is a `BaseBroker`
itself, so steps 5, 6 and 7 do not know it is there). Every call that fails with a
retryable error (`BrokerConnectionError`, `RateLimitError`: the venue could not be
reached) counts; any call that succeeds resets the count. At ``max_errors`` in a row:

* with a backup (the same venue account through another route, e.g. a second API host:
  the ledger's venue and the book stay the same), the primary route is tripped as
  breaker ``connectivity`` with scope ``route:<name>`` -- informational, it blocks
  nothing -- and every later call goes to the backup (the failover is audited and
  alerted). Orders are asked of the route that placed them.
* without one (or when the backup fails in turn), breaker ``connectivity`` trips for
  ``broker:<name>``: step 4 then refuses every order with the breaker's name as the
  reason, until ``tradpal risk reset``.

The state is in the ledger's ``breakers`` table (namespaced like the others), so a
restarted guard starts on the backup if its primary route is still tripped. Each trip is
audited (``breaker.tripped``) and alerted. The error that tripped the breaker is still
raised: the step's own retry and failure handling go on as before.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from brokers.base import BaseBroker, BrokerError, Order, OrderResult

log = logging.getLogger("tradpal.connectivity")
NAME = "connectivity"


class ConnectivityGuard(BaseBroker):
    """A broker that counts consecutive connectivity errors (see the module docstring)."""

    def __init__(self, primary: BaseBroker, backup: BaseBroker | None = None, *, max_errors: int,
                 ledger: Any = None, namespace: str = "live", alerter: Any = None, run_id: str | None = None) -> None:
        if max_errors < 1:
            raise ValueError(f"max_errors must be >= 1, got {max_errors}")
        self.primary, self.backup, self.max_errors = primary, backup, max_errors
        self.ledger, self.namespace, self.alerter, self.run_id = ledger, namespace, alerter, run_id
        self.name = primary.name  # the venue account, whichever route carries the traffic
        self.active = primary
        self.errors = 0
        self.halted = False
        self._owner: dict[str, BaseBroker] = {}  # order id -> the route that placed it
        self._restore()

    # -- state ---------------------------------------------------------------------------

    @property
    def route(self) -> str:
        return "backup" if self.active is self.backup else "primary"

    def _scope(self, kind: str) -> str:
        return f"{self.namespace}|{kind}:{self.name}"

    def _restore(self) -> None:
        """A primary route still tripped in the ledger: start on the backup."""
        if self.ledger is None:
            return
        tripped = {b["scope"] for b in self.ledger.active_breakers() if b["name"] == NAME}
        if self._scope("route") in tripped and self.backup is not None:
            self.active = self.backup
        self.halted = self._scope("broker") in tripped

    @property
    def supports_brackets(self) -> bool:
        return bool(getattr(self.active, "supports_brackets", False))

    def __getattr__(self, name: str) -> Any:  # extras of the active route (attach_bracket, set_price, ...)
        if name in ("primary", "backup", "active"):
            raise AttributeError(name)
        return getattr(self.active, name)

    # -- calls ---------------------------------------------------------------------------

    async def _call(self, broker: BaseBroker, method: str, *args: Any) -> Any:
        try:
            result = await getattr(broker, method)(*args)
        except BrokerError as exc:
            if exc.retryable:
                await self._failed(broker, exc)
            raise
        if broker is self.active:
            self.errors = 0
        return result

    async def _failed(self, broker: BaseBroker, exc: BrokerError) -> None:
        if broker is not self.active or self.halted:
            return
        self.errors += 1
        if self.errors < self.max_errors:
            return
        n, self.errors = self.errors, 0
        why = f"{n} consecutive broker errors on the {self.route} route, the last: {type(exc).__name__}: {exc}"
        if self.active is self.primary and self.backup is not None:
            self._trip("route", f"{why}; failed over to the backup route", n)
            self.active = self.backup
            await self.backup.connect()
        else:
            self.halted = True
            self._trip("broker", f"{why}; no route left: new orders are refused until reset", n)

    def _trip(self, kind: str, reason: str, value: int) -> None:
        from tradpal.ledger import Provenance

        scope = self._scope(kind)
        log.warning("breaker %s (%s) tripped: %s", NAME, scope, reason)
        if self.ledger is not None:
            prov = Provenance(self.run_id, *_prefect_ids())
            with self.ledger.transaction() as s:
                self.ledger.trip_breaker(s, NAME, scope, reason, value=value, threshold=self.max_errors,
                                         at=pd.Timestamp.now(tz="UTC").to_pydatetime(), prov=prov)
        if self.alerter is not None:
            alert = self.alerter.notify(f"breaker:{NAME}:{scope}", f"TradPal breaker tripped: {NAME}",
                                        f"{NAME} ({kind}:{self.name}): {reason}. Value {value} against threshold "
                                        f"{self.max_errors}. Flow run {_prefect_ids()[0]}.", level="failure")
            if self.ledger is not None:
                from tradpal.ledger import Provenance

                with self.ledger.transaction() as s:
                    self.ledger.audit(s, "alert.sent" if alert.delivered else "alert.failed", "alert",
                                      entity_id=alert.key, payload={"title": alert.title, "body": alert.body,
                                                                    "sent": list(alert.sent)},
                                      prov=Provenance(self.run_id, *_prefect_ids()))

    # -- BaseBroker ----------------------------------------------------------------------

    async def connect(self) -> None:
        await self._call(self.active, "connect")

    async def close(self) -> None:
        for broker in {id(b): b for b in (self.primary, self.backup) if b is not None}.values():
            await broker.close()

    async def get_account_info(self):
        return await self._call(self.active, "get_account_info")

    async def place_order(self, order: Order) -> OrderResult:
        broker = self.active
        result = await self._call(broker, "place_order", order)
        self._owner[result.order_id] = broker
        return result

    async def cancel_order(self, order_id: str, symbol: str) -> OrderResult:
        return await self._call(self._owner.get(order_id, self.active), "cancel_order", order_id, symbol)

    async def get_order_status(self, order_id: str, symbol: str) -> OrderResult:
        return await self._call(self._owner.get(order_id, self.active), "get_order_status", order_id, symbol)

    async def get_order_by_client_id(self, client_order_id: str, symbol: str) -> OrderResult | None:
        return await self._call(self.active, "get_order_by_client_id", client_order_id, symbol)

    async def get_positions(self):
        return await self._call(self.active, "get_positions")


def _prefect_ids() -> tuple[str | None, str | None]:
    try:
        from prefect.context import FlowRunContext, TaskRunContext

        flow_ctx, task_ctx = FlowRunContext.get(), TaskRunContext.get()
        return (str(flow_ctx.flow_run.id) if flow_ctx and flow_ctx.flow_run else None,
                str(task_ctx.task_run.id) if task_ctx else None)
    except Exception:  # noqa: BLE001 - provenance is best effort
        return None, None
