"""A throwaway PostgreSQL server for tests: Debian's binaries, a cluster in a temp dir, a free loopback port.

initdb and postgres refuse to run as root, so under root (CI containers) the cluster belongs to the `postgres`
user that Debian's postgresql package creates. Tests skip, saying why, without the binaries or psycopg2.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _binaries() -> Path | None:
    """The bin/ folder of the newest Debian PostgreSQL install, or of initdb on the PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    path = found[-1] if found else shutil.which("initdb")
    return Path(path).parent if path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """postgresql+psycopg2:// URL of an empty database on a fresh server, stopped and deleted after the session."""
    pytest.importorskip("psycopg2", reason="psycopg2 missing: pip install 'budgetnet[search]'")
    bin_dir = _binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found: apt-get install postgresql")
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to own the cluster")
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="budgetnet-pg-"))
    if user:
        shutil.chown(root, user)
    run = lambda *cmd: subprocess.run([str(bin_dir / cmd[0]), *cmd[1:]], user=user, check=True,
                                      capture_output=True, text=True, cwd=root)
    run("initdb", "-D", str(root / "data"), "-U", "budgetnet", "--auth=trust", "-E", "UTF8", "--no-sync")
    port = _free_port()
    try:
        run("pg_ctl", "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-t", "60", "start", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200")
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "budgetnet", "search")
    except subprocess.CalledProcessError as e:
        log = (root / "log").read_text() if (root / "log").is_file() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {e.stderr}\n{log}") from None
    try:
        yield f"postgresql+psycopg2://budgetnet@127.0.0.1:{port}/search"
    finally:
        run("pg_ctl", "-D", str(root / "data"), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
