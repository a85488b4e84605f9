"""A real pgbouncer (Debian's package, scripts/test-deps.d/40-pgbouncer.sh) in front of
the test PostgreSQL, on a free loopback port: Supabase's transaction pooler is pgbouncer
in transaction mode, so this is the thing itself, not a stand-in.

    with PgBouncer(server_url, pool_mode="transaction") as bouncer:
        bouncer.url("mydb")   # postgresql+psycopg://postgres@127.0.0.1:<port>/mydb

pgbouncer will not run as root; as root it is started with ``-u postgres``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy.engine import make_url

BINARIES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def binary() -> str | None:
    found = shutil.which("pgbouncer")
    return found or next((b for b in BINARIES if os.access(b, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgBouncer:
    def __init__(self, server_url: str, *, pool_mode: str = "transaction",
                 pool_size: int = 4, max_client_conn: int = 400) -> None:
        parsed = make_url(server_url)
        self.user = parsed.username or "postgres"
        self.password = parsed.password or ""
        self.server_host = parsed.host or str(parsed.query.get("host") or "127.0.0.1")
        self.server_port = parsed.port or 5432
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def _run_as(self) -> str:
        """postgres, or, for a server on a unix socket (the embedded one, whose folder only
        its own user may enter), the owner of the socket's folder."""
        if self.server_host.startswith("/"):
            return pwd.getpwuid(os.stat(self.server_host).st_uid).pw_name
        return "postgres"

    def url(self, database: str) -> str:
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PgBouncer:
        exe = binary()
        if exe is None:
            raise RuntimeError("pgbouncer is not installed (make test-deps)")
        server = f"host={self.server_host} port={self.server_port} user={self.user}"
        if self.password:
            server += f" password={self.password}"
        (self.dir / "userlist.txt").write_text(f'"{self.user}" "{self.password}"\n')
        (self.dir / "pgbouncer.ini").write_text(f"""[databases]
* = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir / "userlist.txt"}
pool_mode = {self.pool_mode}
default_pool_size = {self.pool_size}
max_client_conn = {self.max_client_conn}
ignore_startup_parameters = extra_float_digits,options
logfile = {self.dir / "pgbouncer.log"}
pidfile = {self.dir / "pgbouncer.pid"}
""")
        command = [exe]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            run_as = self._run_as()
            shutil.chown(self.dir, run_as)
            for child in self.dir.iterdir():
                shutil.chown(child, run_as)
            command += ["-u", run_as]
        command.append(str(self.dir / "pgbouncer.ini"))
        with (self.dir / "stderr.log").open("wb") as err:  # the child keeps its own fd
            self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                stderr = (self.dir / "stderr.log").read_text(errors="replace")
                raise RuntimeError(f"pgbouncer exited: {stderr}{self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("pgbouncer did not start listening")

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
