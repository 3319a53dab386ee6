"""The TradPal execution ledger: runs, signals, orders, fills, positions, rejections and an
append-only audit log, in SQLite (default) or PostgreSQL.

    ledger = Ledger("sqlite:///.tradpal/ledger.db")      # migrates to head (idempotent)
    run_id = ledger.start_run("replay", {"symbols": ["ETH/BTC"]})
    prov = Provenance(run_id=run_id, flow_run_id=..., task_run_id=...)
    with ledger.transaction() as s:                       # one task = one transaction
        signal_pks = ledger.record_signals(s, signals, namespace=f"replay:{run_id}", prov=prov)
"""

from tradpal.ledger.ledger import DEFAULT_URL, RUN_KINDS, RUN_STATUSES, TABLES, Ledger, Provenance
from tradpal.ledger.models import AuditLog, Base, Fill, Order, Position, Rejection, Run, Signal

__all__ = [
    "DEFAULT_URL",
    "RUN_KINDS",
    "RUN_STATUSES",
    "TABLES",
    "AuditLog",
    "Base",
    "Fill",
    "Ledger",
    "Order",
    "Position",
    "Provenance",
    "Rejection",
    "Run",
    "Signal",
]
