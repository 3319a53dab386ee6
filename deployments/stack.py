"""A local, production-like Prefect stack (`make up` / `make down`):

    python -m deployments.stack up      # server + work pool + worker + `prefect deploy --all`
    python -m deployments.stack down    # stops exactly the processes `up` started
    python -m deployments.stack status

`up` starts ``prefect server start --host 127.0.0.1 --port ${TRADPAL_PREFECT_PORT:-4200}``
with its own PREFECT_HOME (``.tradpal/stack/prefect``), waits for ``/api/health``, creates
the process work pool ``tradpal``, starts a worker on it (the warm worker,
`deployments.warm_worker`: event-triggered live runs in its own process, polling every 0.5 s;
``TRADPAL_STACK_WORKER=process`` for Prefect's plain process worker), deploys every deployment of
``prefect.yaml``, and records the pids it started in ``.tradpal/stack/pids.json``; `down`
stops those process groups (SIGTERM, then SIGKILL after a grace period) and nothing else.
``.tradpal/stack/env`` holds the variables to talk to the stack (``source`` it).

``TRADPAL_STACK_DATABASE=postgresql``: Prefect's own database and the ledger on the
PostgreSQL at ``TRADPAL_STACK_POSTGRES`` (default ``postgres@127.0.0.1:5432``), databases
``tradpal_prefect`` and ``tradpal_ledger`` (created if missing). Prefect's SQLite answers
503 "database is locked" under back-to-back runs; PostgreSQL does not.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deployments import ROOT
from tradpal.processes import process_alive

POOL = "tradpal"
DEFAULT_DIR = ROOT / ".tradpal" / "stack"


class StackError(Exception):
    """The stack could not be started or stopped; the message says why and where to look."""


@dataclass
class StackConfig:
    dir: Path = DEFAULT_DIR
    port: int = 4200
    database: str = "sqlite"  # or postgresql
    postgres: str = "postgres@127.0.0.1:5432"
    db_prefix: str = "tradpal"
    worker: str = "warm"  # or process: Prefect's plain process worker (a new Python per flow run)
    query_seconds: float = 0.5  # how often the worker asks for runs due (PREFECT_WORKER_QUERY_SECONDS)
    extra_env: dict[str, str] = field(default_factory=dict)  # for the worker (and so the flow runs)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> StackConfig:
        env = dict(os.environ if env is None else env)
        port = env.get("TRADPAL_PREFECT_PORT", "4200")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise StackError(f"TRADPAL_PREFECT_PORT: expected a port number, got {port!r}")
        database = env.get("TRADPAL_STACK_DATABASE", "sqlite")
        if database not in ("sqlite", "postgresql"):
            raise StackError(f"TRADPAL_STACK_DATABASE: expected sqlite or postgresql, got {database!r}")
        worker = env.get("TRADPAL_STACK_WORKER", "warm")
        if worker not in ("warm", "process"):
            raise StackError(f"TRADPAL_STACK_WORKER: expected warm or process, got {worker!r}")
        return cls(dir=Path(env.get("TRADPAL_STACK_DIR", DEFAULT_DIR)), port=int(port), database=database,
                   postgres=env.get("TRADPAL_STACK_POSTGRES", "postgres@127.0.0.1:5432"), worker=worker)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def prefect_db_url(self) -> str | None:
        return f"postgresql+asyncpg://{self.postgres}/{self.db_prefix}_prefect" if self.database == "postgresql" else None

    def ledger_url(self) -> str | None:
        return f"postgresql+psycopg://{self.postgres}/{self.db_prefix}_ledger" if self.database == "postgresql" else None


@dataclass
class Stack:
    config: StackConfig
    pids: dict[str, int]

    @property
    def api_url(self) -> str:
        return self.config.api_url


PACKAGES = ("brokers", "deployments", "flows", "risk", "tasks", "tradpal")


def compile_bytecode() -> None:
    """Compile this repository's packages once, so that each flow run's new Python
    process loads them from bytecode (with PYTHONDONTWRITEBYTECODE=1 every process would
    compile them from source again)."""
    import compileall

    for package in PACKAGES:
        compileall.compile_dir(ROOT / package, quiet=1, workers=1)


def _base_env(config: StackConfig) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update({"PREFECT_HOME": str(config.dir / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "INFO")})
    return env


def client_env(config: StackConfig) -> dict[str, str]:
    """What a client of the stack needs (also written to ``env``)."""
    env = {"PREFECT_API_URL": config.api_url, "TRADPAL_REPO_DIR": str(ROOT)}
    if config.ledger_url():
        env["TRADPAL_DATABASE_URL"] = config.ledger_url() or ""
    return env


def _prefect(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", *args]


def _spawn(name: str, cmd: list[str], env: dict[str, str], config: StackConfig) -> int:
    log = open(config.dir / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: `down` stops it and its children
    log.close()
    return proc.pid


def _wait_healthy(config: StackConfig, server_pid: int, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(server_pid):
            raise StackError(f"prefect server exited during start-up; see {config.dir / 'server.log'}")
        try:
            if httpx.get(f"{config.api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise StackError(f"prefect server not healthy on {config.api_url} after {timeout:.0f} s; "
                     f"see {config.dir / 'server.log'}")


def _run(cmd: list[str], env: dict[str, str], what: str, config: StackConfig, timeout: float = 300) -> None:
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    with open(config.dir / "setup.log", "a") as log:
        log.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["(no output)"]
        raise StackError(f"{what} failed (exit {done.returncode}): {last[0]}; see {config.dir / 'setup.log'}")


def ensure_postgres_databases(config: StackConfig) -> None:
    """Create the stack's two PostgreSQL databases if they do not exist."""
    import psycopg

    try:
        with psycopg.connect(f"postgresql://{config.postgres}/postgres", autocommit=True, connect_timeout=5) as conn:
            for db in (f"{config.db_prefix}_prefect", f"{config.db_prefix}_ledger"):
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is None:
                    conn.execute(f'CREATE DATABASE "{db}"')
    except psycopg.Error as exc:
        raise StackError(f"TRADPAL_STACK_POSTGRES={config.postgres}: {str(exc).strip().splitlines()[0]}") from None


def create_work_pool(api_url: str, name: str = POOL) -> None:
    """The process work pool ``name`` (kept if it exists), through the API: the same as
    ``prefect work-pool create NAME --type process``, without starting another Python."""
    import asyncio

    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    async def create() -> None:
        template = ProcessWorker.get_default_base_job_template()
        async with PrefectClient(api_url) as client:
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))

    asyncio.run(create())


def worker_command(config: StackConfig) -> list[str]:
    """The worker on pool ``tradpal``: the warm worker (`deployments.warm_worker`: the
    event-triggered live runs in its own process, every other run in a process of its own),
    or Prefect's plain process worker (``TRADPAL_STACK_WORKER=process``)."""
    if config.worker == "warm":
        return [sys.executable, "-m", "deployments.warm_worker", "--pool", POOL]
    return _prefect("worker", "start", "--pool", POOL, "--type", "process")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def up(config: StackConfig, *, deploy: bool = True, timeout: float = 180) -> Stack:
    """Start the stack (see the module docstring); on any failure, stop what was started."""
    config.dir.mkdir(parents=True, exist_ok=True)
    running = read_pids(config.dir)
    if running and any(process_alive(p) for p in running["pids"].values()):
        raise StackError(f"already up ({config.dir / 'pids.json'}); `make down` first")
    if not _port_free(config.port):
        raise StackError(f"127.0.0.1:{config.port} is in use (set TRADPAL_PREFECT_PORT)")
    if config.database == "postgresql":
        ensure_postgres_databases(config)
    compile_bytecode()
    server_env = _base_env(config)
    if config.prefect_db_url():
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = config.prefect_db_url() or ""
    pids: dict[str, int] = {}
    try:
        pids["server"] = _spawn("server", _prefect("server", "start", "--host", "127.0.0.1", "--port",
                                                   str(config.port)), server_env, config)
        _write_pids(config, pids)
        _wait_healthy(config, pids["server"], timeout)
        env = {**_base_env(config), **client_env(config)}
        create_work_pool(config.api_url)
        worker_env = {**env, "PREFECT_WORKER_QUERY_SECONDS": str(config.query_seconds),
                      "PREFECT_WORKER_PREFETCH_SECONDS": "5", **config.extra_env}
        pids["worker"] = _spawn("worker", worker_command(config), worker_env, config)
        _write_pids(config, pids)
        if deploy:
            _run(_prefect("--no-prompt", "deploy", "--all"), env, "prefect deploy --all", config)
    except BaseException:
        _stop(pids)
        (config.dir / "pids.json").unlink(missing_ok=True)
        raise
    (config.dir / "env").write_text("".join(f"export {k}={v}\n" for k, v in client_env(config).items()))
    return Stack(config, pids)


def _write_pids(config: StackConfig, pids: dict[str, int]) -> None:
    data = {"pids": pids, "config": {k: str(v) for k, v in asdict(config).items() if k != "extra_env"},
            "api_url": config.api_url}
    (config.dir / "pids.json").write_text(json.dumps(data, indent=2) + "\n")


def read_pids(stack_dir: Path) -> dict | None:
    path = stack_dir / "pids.json"
    return json.loads(path.read_text()) if path.exists() else None


def _stop(pids: dict[str, int], grace: float = 15.0) -> list[str]:
    """SIGTERM each recorded process group (worker first), SIGKILL what outlives ``grace``."""
    order = sorted(pids, key=lambda n: n != "worker")
    for name in order:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pids[name], signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_group_alive(p) for p in pids.values()):
        _reap(pids.values())
        time.sleep(0.2)
    for pid in pids.values():
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    _reap(pids.values())
    return order


def _reap(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in process group ``pgid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def down(stack_dir: Path = DEFAULT_DIR) -> list[str]:
    """Stop the processes `up` recorded in ``stack_dir`` (and their children); the names stopped."""
    data = read_pids(stack_dir)
    if data is None:
        return []
    stopped = _stop({k: int(v) for k, v in data["pids"].items()})
    (stack_dir / "pids.json").unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["up"], ["down"], ["status"]):
        print("usage: python -m deployments.stack up|down|status", file=sys.stderr)
        return 2
    try:
        config = StackConfig.from_env()
        if args == ["up"]:
            t0 = time.monotonic()
            stack = up(config)
            print(f"stack up in {time.monotonic() - t0:.1f} s: Prefect API and UI on http://127.0.0.1:{config.port} "
                  f"(database: {config.database}), work pool '{POOL}', worker pid {stack.pids['worker']}, "
                  f"deployments from prefect.yaml")
            print(f"talk to it:  source {config.dir / 'env'}   then e.g. "
                  f"tradpal signal submit --symbol BTC/USDT --side buy --quantity 0.01 --price 65000")
        elif args == ["down"]:
            stopped = down(config.dir)
            print(f"stopped: {', '.join(stopped)}" if stopped else f"nothing to stop ({config.dir / 'pids.json'})")
        else:
            data = read_pids(config.dir)
            if not data:
                print("down")
            else:
                for name, pid in data["pids"].items():
                    print(f"{name}: pid {pid} {'running' if process_alive(int(pid)) else 'GONE'}")
    except StackError as exc:
        print(f"stack: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
