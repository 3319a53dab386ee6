"""`.ci/run`'s PostgreSQL set-up where none answers: it starts a server from Debian's
binaries on ``TRADPAL_CI_PG_PORT`` (here a free port, nothing listening), the ledger's
PostgreSQL tests run against it (not skipped), and it is stopped and removed at exit. The
apt-get install branch cannot be run for real on a machine that has the packages (removing
them would pull the server from under everything else here): its command line runs as
``apt-get install -s`` (``TRADPAL_CI_PG_INSTALL=simulate``) against a copy of dpkg's status
without the postgresql packages — what a clean Debian machine would install."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.pg_instance import find_binaries, free_port

ROOT = Path(__file__).resolve().parents[2]
CI_RUN = ROOT / ".ci" / "run"
DPKG_STATUS = Path("/var/lib/dpkg/status")


def answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ci_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRADPAL_TEST_DATABASE_URL", "TRADPAL_CI_PG_INSTALL")}
    return {**env, **extra}


@pytest.mark.slow
@pytest.mark.skipif(find_binaries() is None, reason="no PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
def test_ci_run_starts_postgresql_where_none_answers():
    port = free_port()
    assert not answers(port)
    inner = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ledger/test_writers.py",
             "-m", "postgres"]
    proc = subprocess.run([str(CI_RUN), *inner], cwd=ROOT, env=ci_env(TRADPAL_CI_PG_PORT=str(port)),
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    started = re.search(rf"started PostgreSQL \S+ on 127\.0\.0\.1:{port} \((\S+)\)", out)
    assert started, out[-4000:]
    assert f"ledger tests on PostgreSQL: postgresql+psycopg://postgres@127.0.0.1:{port}/test" in out
    summary = out.strip().splitlines()[-1]
    assert re.match(r"\d+ passed", summary) and "skipped" not in summary and "deselected" in summary, summary
    # stopped and removed at exit
    assert not answers(port)
    assert not Path(started.group(1)).exists()


@pytest.mark.skipif(shutil.which("apt-get") is None or not DPKG_STATUS.exists(), reason="not a Debian system")
def test_ci_run_install_command_line_resolves_on_a_machine_without_postgresql(tmp_path):
    stanzas = [s for s in DPKG_STATUS.read_text().split("\n\n") if s.strip()]
    without = [s for s in stanzas if not re.match(r"Package: postgresql", s)]
    (tmp_path / "status").write_text("\n\n".join(without) + "\n")
    (tmp_path / "apt.conf").write_text(f'Dir::State::status "{tmp_path / "status"}";\n')
    proc = subprocess.run([str(CI_RUN), "true"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=ci_env(TRADPAL_CI_PG_INSTALL="simulate", APT_CONFIG=str(tmp_path / "apt.conf"),
                                     TRADPAL_TEST_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/none"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "installing PostgreSQL from Debian's packages (simulated: apt-get install -s)" in out
    assert "could not install" not in out, out[-4000:]
    installs = re.findall(r"^Inst (\S+)", out, re.M)
    assert "postgresql" in installs and any(re.fullmatch(r"postgresql-\d+", p) for p in installs), out[-4000:]
    assert "started PostgreSQL" not in out  # a database was given: nothing started
