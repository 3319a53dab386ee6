"""`.ci/run`'s PostgreSQL set-up where none answers: it starts a server from Debian's
binaries on ``TRADPAL_CI_PG_PORT`` (here a free port, nothing listening), the ledger's
PostgreSQL tests run against it (not skipped), and it is stopped and removed at exit.

The apt-get install branch cannot be run for real on a machine that has the packages
(removing them would pull the server from under everything else here). Two checks instead:
its command line runs as ``apt-get install -s`` (``TRADPAL_CI_PG_INSTALL=simulate``) against
a copy of dpkg's status without the postgresql packages — what a clean Debian machine would
install; and, as root in a private mount namespace (``unshare -m``) where
``/usr/lib/postgresql`` and ``/usr/sbin/policy-rc.d`` are hidden, the whole branch runs with
a stand-in ``apt-get`` that records how it is called (the first install fails, as with stale
package lists) and then "installs" by showing the real binaries again: `.ci/run` denies
service starts while it installs, retries after ``apt-get update``, removes its
policy-rc.d, starts its own server and the ledger's tests run on it."""

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


STAND_IN_APT = """#!/bin/sh
echo "apt-get $* | DEBIAN_FRONTEND=$DEBIAN_FRONTEND | policy-rc.d: $(tr '\\n' ' ' </usr/sbin/policy-rc.d 2>/dev/null)" >>"$W/apt.log"
case "$1" in
  update) exit 0 ;;
  install)
    [ -e "$W/failed-once" ] || { touch "$W/failed-once"; exit 100; }
    [ -n "$APT_FAILS" ] && exit 100
    for d in "$W"/real-pg/*; do ln -s "$d" /usr/lib/postgresql/; done ;;
esac
"""

NAMESPACE = """set -eu
mount --bind /usr/lib/postgresql "$W/real-pg"
mount -t tmpfs tmpfs /usr/lib/postgresql
mount --bind /usr/sbin "$W/real-sbin"
cp -as "$W/real-sbin" "$W/sbin" && rm -f "$W/sbin/policy-rc.d"
mount --bind "$W/sbin" /usr/sbin
test ! -e /usr/sbin/policy-rc.d && test -z "$(ls /usr/lib/postgresql)"
exec "$@"
"""


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None or find_binaries() is None:
        return False
    return subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True).returncode == 0


@pytest.fixture
def no_postgresql_here():
    """A world-readable work folder (the ``postgres`` user runs the binaries through it),
    the stand-in apt-get first on PATH, and the command prefix that runs a command where
    PostgreSQL and policy-rc.d are not installed."""
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="tradpal-ci-apt-"))
    work.chmod(0o755)
    for d in ("real-pg", "real-sbin", "bin"):
        (work / d).mkdir()
    (work / "bin" / "apt-get").write_text(STAND_IN_APT)
    (work / "bin" / "apt-get").chmod(0o755)
    (work / "ns.sh").write_text(NAMESPACE)
    try:
        yield work, ["unshare", "-m", "--propagation", "private", "bash", str(work / "ns.sh")]
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(not _namespaces_work(), reason="needs root, unshare -m and PostgreSQL's binaries")
def test_ci_run_install_branch_end_to_end_with_a_stand_in_apt(no_postgresql_here):
    work, in_namespace = no_postgresql_here
    port, had_policy = free_port(), Path("/usr/sbin/policy-rc.d").exists()
    env = ci_env(TRADPAL_CI_PG_PORT=str(port), W=str(work), PATH=f"{work / 'bin'}:{os.environ['PATH']}")
    inner = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ledger/test_writers.py",
             "-m", "postgres", "-k", "run"]
    proc = subprocess.run([*in_namespace, str(CI_RUN), *inner], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "installing PostgreSQL from Debian's packages\n" in out and "could not install" not in out
    calls = (work / "apt.log").read_text().splitlines()
    deny = "policy-rc.d: #!/bin/sh exit 101"
    assert calls == [f"apt-get install -y -qq postgresql | DEBIAN_FRONTEND=noninteractive | {deny} ",
                     f"apt-get update -qq | DEBIAN_FRONTEND=noninteractive | {deny} ",
                     f"apt-get install -y -qq postgresql | DEBIAN_FRONTEND=noninteractive | {deny} "], calls
    assert not (work / "sbin" / "policy-rc.d").exists()  # removed after the install
    assert re.search(rf"started PostgreSQL \S+ on 127\.0\.0\.1:{port} ", out), out[-4000:]
    summary = out.strip().splitlines()[-1]
    assert re.match(r"\d+ passed", summary) and "skipped" not in summary, summary
    assert not answers(port)
    assert Path("/usr/sbin/policy-rc.d").exists() == had_policy  # the machine's own: untouched


@pytest.mark.skipif(not _namespaces_work(), reason="needs root, unshare -m and PostgreSQL's binaries")
def test_ci_run_install_that_fails_says_so_and_the_postgresql_tests_skip(no_postgresql_here):
    work, in_namespace = no_postgresql_here
    env = ci_env(TRADPAL_CI_PG_PORT=str(free_port()), W=str(work), APT_FAILS="1",
                 PATH=f"{work / 'bin'}:{os.environ['PATH']}")
    proc = subprocess.run([*in_namespace, str(CI_RUN), "true"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "could not install PostgreSQL: its tests will skip" in out
    assert "ledger tests on PostgreSQL: no (skipped)" in out and "started PostgreSQL" not in out
    assert [c.split(" |")[0] for c in (work / "apt.log").read_text().splitlines()] == [
        "apt-get install -y -qq postgresql", "apt-get update -qq", "apt-get install -y -qq postgresql"]
    assert not (work / "sbin" / "policy-rc.d").exists()
