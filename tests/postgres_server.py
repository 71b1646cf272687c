"""A PostgreSQL server in a folder of its own, on a free port of this machine, for the tests
(conftest's `postgres` fixture): `initdb`, `pg_ctl start` and `pg_ctl stop` of Debian's
`postgresql` package (`make postgres` installs it), run as the user `postgres` when this is
root (the server refuses to run as root)."""

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOW = "`make postgres` installs it (apt-get install postgresql), as root"


def binaries() -> Path | None:
    """The folder of the newest installed server's initdb and pg_ctl."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: p.parts[-3])
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def missing() -> str | None:
    """Why no server can start here, or None."""
    if binaries() is None:
        return f"PostgreSQL's initdb and pg_ctl are not installed: {HOW}"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "PostgreSQL runs as the user postgres, which this machine lacks: " + HOW
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    folder: Path
    port: int

    @property
    def url(self) -> str:
        """The URL of its database `postgres`, for the superuser `postgres` (trusted locally)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


def _as_server_user(*command: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


def start(folder: Path) -> Server:
    """initdb a new cluster in `folder` and start it on a free port; returns once it accepts
    connections (pg_ctl -w waits for that)."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    bin_dir = binaries()
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    quiet = {"check": True, "capture_output": True, "text": True}
    subprocess.run(
        _as_server_user(
            str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        ),
        **quiet,
    )
    port = free_port()
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off"
    subprocess.run(
        _as_server_user(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(folder / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ),  # fmt: skip
        **quiet,
    )
    return Server(folder, port)


def stop(folder: Path) -> None:
    """Stop the server `start` started in `folder` (its connections closed at once)."""
    data = folder / "data"
    if (data / "postmaster.pid").is_file():
        subprocess.run(
            _as_server_user(
                str(binaries() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"
            ),
            capture_output=True,
            check=False,
        )
