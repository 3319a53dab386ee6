"""The audit log is append-only, enforced by the database itself."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tradpal.ledger import Provenance


def test_audit_log_refuses_update_and_delete(ledger):
    with ledger.transaction() as s:
        ledger.audit(s, "test.event", "thing", entity_id="1", payload={"a": 1}, prov=Provenance())
    for statement in ("UPDATE audit_log SET event = 'forged'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), ledger.engine.begin() as conn:
            conn.execute(text(statement))
    rows = ledger.frame("audit_log")
    assert rows["event"].tolist() == ["test.event"]
    with ledger.transaction() as s:  # inserting still works
        ledger.audit(s, "test.second", "thing", prov=Provenance())
    assert len(ledger.frame("audit_log")) == 2
