"""``python -m tradpal.ledger {upgrade,downgrade,current,check,revision} [--url URL]``.

The URL defaults to $TRADPAL_LEDGER_URL, then to the default SQLite file."""

from __future__ import annotations

import argparse
import os
import sys

from alembic import command

from tradpal.ledger.engine import create_ledger_engine
from tradpal.ledger.ledger import DEFAULT_URL
from tradpal.ledger.migrate import alembic_config, current_revision, head_revision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tradpal.ledger", description="ledger migrations")
    parser.add_argument("command", choices=["upgrade", "downgrade", "current", "check", "revision"])
    parser.add_argument("--url", default=os.environ.get("TRADPAL_LEDGER_URL", DEFAULT_URL))
    parser.add_argument("--schema", default=None, help="PostgreSQL schema (search_path)")
    parser.add_argument("--revision", default=None, help="target for upgrade (head) / downgrade (-1)")
    parser.add_argument("-m", "--message", default="change", help="message for a new revision")
    parser.add_argument(
        "--autogenerate", action="store_true", help="revision: diff the models against the db"
    )
    args = parser.parse_args(argv)

    engine = create_ledger_engine(args.url, schema=args.schema)
    masked = engine.url.render_as_string(hide_password=True)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(connection=conn)
            if args.command == "upgrade":
                command.upgrade(cfg, args.revision or "head")
            elif args.command == "downgrade":
                command.downgrade(cfg, args.revision or "-1")
            elif args.command == "check":  # exit 1 when the models differ from the migrations
                command.check(cfg)
            elif args.command == "revision":
                command.revision(cfg, message=args.message, autogenerate=args.autogenerate)
            print(f"{masked}: at {current_revision(conn)} (head {head_revision()})")
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
