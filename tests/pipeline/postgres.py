"""A throwaway PostgreSQL server for tests: ``initdb`` in a temporary directory, ``pg_ctl start`` on a free
loopback port, trust authentication, stopped and deleted afterwards.

Binaries: ``initdb`` / ``pg_ctl`` on PATH, else Debian's ``/usr/lib/postgresql/<version>/bin`` (package
``postgresql``). PostgreSQL refuses to run as root: as root, the data directory is given to ``nobody`` and
the server runs as that user (``runuser``, else ``setpriv``). Use :func:`postgres_url` as a pytest fixture
(``from tests.pipeline.postgres import postgres_url``): it yields a SQLAlchemy URL, or skips the tests that
use it with the reason when no server can be started.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_UNPRIVILEGED = "nobody"


def find_binaries() -> Path | None:
    """Directory holding initdb and pg_ctl (PATH first, then the newest Debian version), or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_user(command: list[str]) -> list[str]:
    """``command`` run as an unprivileged user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", _UNPRIVILEGED, "--", *command]
    if shutil.which("setpriv"):
        import pwd

        user = pwd.getpwnam(_UNPRIVILEGED)
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *command]
    raise RuntimeError("running as root and neither runuser nor setpriv is available")


def _run(command: list[str], timeout: float = 120) -> None:
    result = subprocess.run(_as_user(command), capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{Path(command[0]).name} failed: {' | '.join(tail)}")


class PostgresServer:
    """One server: ``start()`` -> SQLAlchemy URL; ``stop()`` stops it and deletes its directory."""

    def __init__(self) -> None:
        self.directory: Path | None = None
        self.bin: Path | None = None
        self.port = 0

    def start(self) -> str:
        self.bin = find_binaries()
        if self.bin is None:
            raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin; "
                               "install Debian's 'postgresql' package")
        self.directory = Path(tempfile.mkdtemp(prefix="crs-pg-"))
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam(_UNPRIVILEGED)
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        data = self.directory / "data"
        _run([str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
              "--no-locale", "--no-sync"])
        self.port = _free_port()
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        _run([str(self.bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.directory / "log"),
              "-w", "-t", "60", "start"])
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if self.directory is None:
            return
        if self.bin is not None and (self.directory / "data" / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                _run([str(self.bin / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A running throwaway server's URL for the ``with`` block (RuntimeError when none can start)."""
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Session fixture: a throwaway server's SQLAlchemy URL; skips (with the reason) when none can start."""
    server = PostgresServer()
    try:
        url = server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        if os.environ.get("CI") == "true":  # .ci/run installs the server: there a skip would hide a failure
            pytest.fail(f"PostgreSQL server could not be started in CI ({exc})")
        pytest.skip(f"PostgreSQL tests skipped: no server could be started ({exc})")
    try:
        yield url
    finally:
        server.stop()
