"""A throwaway, real PostgreSQL server for tests: initdb into a temporary folder, start on a free
port on 127.0.0.1, create a database, hand out its URL, stop and delete everything afterwards.

It uses the server binaries of Debian's `postgresql` package (/usr/lib/postgresql/<version>/bin,
not on PATH), or those in the folder named by HASHSERVE_PG_BIN, or initdb/pg_ctl on PATH. When
none are found, `find_pg_bin` returns None and the tests skip, saying what to install.

PostgreSQL refuses to run as root. Run as root (a container, CI), the server's commands run as
the `postgres` OS user that the Debian package creates (`runuser -u postgres --`), in a folder
that user owns; run as anyone else, they run as that user.

What it leaves to others: the schema (the journal creates its own) and any test data.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_BIN_ENV = "HASHSERVE_PG_BIN"
OS_USER = "postgres"
SUPERUSER = "hashserve"
# The server's own tools and the two client tools used here; Debian puts all in one folder.
TOOLS = ("initdb", "pg_ctl", "postgres", "psql", "pg_isready")
INSTALL_HINT = (
    "PostgreSQL server binaries not found: install Debian's `postgresql` package "
    f"(apt-get install -y postgresql) or set {PG_BIN_ENV} to a folder holding "
    + ", ".join(TOOLS)
)


def _runuser() -> str | None:
    """util-linux's runuser; root's PATH may lack the sbin folders it lives in."""
    return shutil.which("runuser") or shutil.which(
        "runuser", path="/usr/sbin:/sbin:/usr/bin:/bin"
    )


def _has_tools(folder: Path) -> bool:
    return all((folder / tool).is_file() for tool in TOOLS)


def _version_key(folder: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); the newest installed version wins.
    return tuple(int(x) for x in re.findall(r"\d+", folder.parent.name)) or (0,)


def find_pg_bin() -> Path | None:
    """The folder holding initdb, pg_ctl, postgres, psql and pg_isready, or None."""
    configured = os.environ.get(PG_BIN_ENV)
    if configured:
        folder = Path(configured)
        return folder if _has_tools(folder) else None
    debian = sorted(
        (p for p in Path("/").glob(DEBIAN_BIN_GLOB.lstrip("/")) if _has_tools(p)),
        key=_version_key,
    )
    if debian:
        return debian[-1]
    on_path = shutil.which("pg_ctl")
    if on_path and _has_tools(Path(on_path).parent):
        return Path(on_path).parent
    return None


def unavailable_reason() -> str | None:
    """Why a server cannot be started here, or None when it can."""
    if find_pg_bin() is None:
        return INSTALL_HINT
    if os.geteuid() == 0:
        if _runuser() is None:
            return "running as root needs `runuser` (util-linux) to start PostgreSQL as postgres"
        try:
            import pwd

            pwd.getpwnam(OS_USER)
        except KeyError:
            return f"running as root needs an OS user {OS_USER!r} to run PostgreSQL as"
    return None


@dataclass(frozen=True)
class ToolResult:
    returncode: int
    output: str


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in its own temporary folder. Use as a context manager."""

    def __init__(self, database: str = "hashserve", start_timeout_s: float = 60.0) -> None:
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise RuntimeError(INSTALL_HINT)
        self.bin_dir = bin_dir
        self.database = database
        self.start_timeout_s = start_timeout_s
        self.password = secrets.token_urlsafe(16)
        self.port = 0
        self._as_root = os.geteuid() == 0
        # Not pytest's tmp_path: that lives under a 0700 folder of root's, which the postgres
        # user could not enter. mkdtemp makes a 0700 folder in /tmp that we hand over to it.
        self.root = Path(tempfile.mkdtemp(prefix="hashserve-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_path = self.root / "server.log"
        self._running = False

    # ----- the URL ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        # Over TCP with a password (scram-sha-256), as a journal on another Ray node would be.
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, icu_locale: str | None = None) -> str:
        """A further, empty database on this server; returns its URL.

        icu_locale (for example "en-US"): text sorts by that locale's rules (ICU, built into
        Debian's server) instead of byte by byte, as on many production servers.
        """
        self._create_database(name, icu_locale)
        return self.url_for(name)

    # ----- life cycle -----------------------------------------------------------------------

    def start(self) -> PostgresServer:
        try:
            self._initdb()
            self._start_on_a_free_port()
            self._create_database(self.database)
        except BaseException:
            self.close()
            raise
        return self

    def stop(self) -> None:
        if self._running:
            self._pg_ctl("stop", "-m", "fast", "-w")
            self._running = False

    def relaunch(self) -> None:
        """Start a stopped server again, on the same port with the same data."""
        if not self._running:
            self._pg_ctl(
                "start", "-w", "-t", str(int(self.start_timeout_s)), "-l", str(self.log_path)
            )
            self._running = True
            self._wait_until_ready()

    def restart(self) -> None:
        """Fast restart: the server ends every session (clients see their connection drop),
        then comes back on the same port with the same data."""
        self._pg_ctl(
            "restart", "-m", "fast", "-w", "-t", str(int(self.start_timeout_s)),
            "-l", str(self.log_path),
        )
        self._running = True
        self._wait_until_ready()

    def close(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    # ----- steps ----------------------------------------------------------------------------

    def _initdb(self) -> None:
        self.data_dir.mkdir()
        self.socket_dir.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            shutil.chown(self.root, OS_USER, OS_USER)
            for p in (self.data_dir, self.socket_dir, pwfile):
                shutil.chown(p, OS_USER, OS_USER)
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
            # Local socket trusted (only this folder's owner can reach it); TCP needs the
            # password, like a real deployment.
            "--auth-local=trust", "--auth-host=scram-sha-256",
            # Encoding fixed, locale C: the same on every machine, whatever its environment.
            "-E", "UTF8", "--locale=C", "--no-instructions",
        )
        pwfile.unlink()
        # Settings go into the config file, not onto pg_ctl's command line, so that a restart
        # keeps them. fsync stays on: the journal's durability is what is under test.
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# hashserve test server\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 50\n"
                "shared_buffers = 32MB\n"
            )

    def _start_on_a_free_port(self) -> None:
        # Another process may take the port between free_port() and the bind: try a few.
        last_error = ""
        for _ in range(5):
            self.port = free_port()
            self._set_port(self.port)
            result = self._pg_ctl(
                "start", "-w", "-t", str(int(self.start_timeout_s)),
                "-l", str(self.log_path), check=False,
            )
            if result.returncode == 0:
                self._running = True
                self._wait_until_ready()
                return
            last_error = result.output
            if "could not bind" not in self.log_tail():
                break
        raise RuntimeError(
            f"PostgreSQL did not start: {last_error.strip()}\n--- server log ---\n"
            + self.log_tail()
        )

    def _set_port(self, port: int) -> None:
        conf = self.data_dir / "postgresql.conf"
        text = re.sub(r"(?m)^port = \d+\n", "", conf.read_text())
        conf.write_text(text + f"port = {port}\n")

    def _wait_until_ready(self) -> None:
        """`pg_ctl -w` returns once the server accepts connections; check over TCP anyway,
        which is the path the journal takes."""
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            result = self._run(
                "pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-d", "postgres",
                check=False,
            )
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL on port {self.port} is not ready after {self.start_timeout_s} s"
                    f"\n--- server log ---\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _create_database(self, name: str, icu_locale: str | None = None) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _")
        sql = f"CREATE DATABASE {name}"
        if icu_locale is not None:
            if not re.fullmatch(r"[A-Za-z0-9_@=-]+", icu_locale):
                raise ValueError(f"ICU locale {icu_locale!r}: letters, digits, - _ @ = only")
            # Another locale than the cluster's needs the pristine template.
            sql += f" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}'"
        self._run(
            "psql", "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER,
            "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql,
        )

    # ----- running the binaries -------------------------------------------------------------

    def _pg_ctl(self, *args: str, check: bool = True) -> ToolResult:
        return self._run("pg_ctl", "-D", str(self.data_dir), *args, check=check)

    def _run(self, tool: str, *args: str, check: bool = True) -> ToolResult:
        cmd = [str(self.bin_dir / tool), *args]
        if self._as_root:
            cmd = [str(_runuser()), "-u", OS_USER, "--", *cmd]
        # Output to a file, not a pipe: a server that pg_ctl leaves running inherits the
        # descriptors, and a pipe would then never close.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.root, check=False, timeout=120,
            )
            out.seek(0)
            output = out.read().strip()
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({result.returncode}): {output}"
                f"\n--- server log ---\n{self.log_tail()}"
            )
        return ToolResult(result.returncode, output)
        return result


@contextmanager
def postgres_server(database: str = "hashserve") -> Iterator[PostgresServer]:
    """A started server, stopped and deleted on exit."""
    with PostgresServer(database) as server:
        yield server
