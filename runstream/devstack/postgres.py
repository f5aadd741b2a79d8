"""A throwaway PostgreSQL cluster (Debian's server build) on 127.0.0.1.

PostgreSQL refuses to run as root, so when we are root every server binary runs as the
``postgres`` system user through ``runuser`` and the cluster's directory belongs to it.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

PG_USER = "postgres"
DB_NAME = "runstream"
DB_ROLE = "runstream"
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes including "/.s.PGSQL.NNNNN"


def is_root() -> bool:
    """Whether this process runs as root (then servers run as ``postgres``)."""
    return os.geteuid() == 0


def find_bin_dir() -> Path:
    """Directory of ``initdb``/``pg_ctl``: ``$RUNSTREAM_PG_BIN``, Debian's newest, or ``PATH``."""
    env = os.environ.get("RUNSTREAM_PG_BIN")
    candidates = [Path(env)] if env else []
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [p for p in debian.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: int(p.name), reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    raise RuntimeError("PostgreSQL server binaries not found; run scripts/install-system-deps.sh as root")


def as_pg_user(cmd: list[str]) -> list[str]:
    """Prefix ``cmd`` with ``runuser -u postgres --`` when running as root."""
    return ["runuser", "-u", PG_USER, "--", *cmd] if is_root() else cmd


def _pg_can_write(path: Path) -> bool:
    return subprocess.run(as_pg_user(["test", "-x", str(path), "-a", "-w", str(path)]),
                          stdin=subprocess.DEVNULL, capture_output=True, cwd="/").returncode == 0


def candidate_roots(state_dir: Path) -> list[Path]:
    """Where the cluster of ``state_dir`` may live: inside it, else a private dir in /tmp."""
    digest = hashlib.sha1(str(state_dir).encode()).hexdigest()[:12]
    return [state_dir / "pg", Path(tempfile.gettempdir()) / f"runstream-pg-{digest}"]


def prepare_root(state_dir: Path) -> Path:
    """Create and return the cluster's directory, owned by the server user.

    It is ``state_dir/pg`` unless the ``postgres`` user cannot reach ``state_dir``
    (e.g. under ``/root`` or pytest's 0700 temp dirs); then ``/tmp/runstream-pg-<hash>``.
    """
    inside, fallback = candidate_roots(state_dir)
    if not is_root():
        inside.mkdir(parents=True, exist_ok=True)
        return inside
    for root in (inside, fallback):
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        pw = pwd.getpwnam(PG_USER)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        if _pg_can_write(root):
            return root
        shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError(f"user {PG_USER} cannot write {inside} nor {fallback}")


def socket_dir(root: Path) -> str:
    """The Unix socket directory, or "" (TCP only) when the path would be too long for a socket."""
    sock = root / "sock"
    return str(sock) if len(str(sock)) <= SOCKET_PATH_MAX - len("/.s.PGSQL.65535") else ""


def render_conf(port: int, socket_directory: str, *, preload: str = "") -> str:
    """Server settings for tests and benchmarks on a small machine; durability is kept."""
    lines = [
        "# Rendered by runstream.devstack on every start.",
        "listen_addresses = '127.0.0.1'",
        f"port = {port}",
        f"unix_socket_directories = '{socket_directory}'",
        "max_connections = 200",
        "shared_buffers = 256MB",
        "work_mem = 16MB",
        "maintenance_work_mem = 128MB",
        "effective_cache_size = 1GB",
        "max_wal_size = 2GB",
        "max_parallel_workers_per_gather = 1",
        "# durability stays on: fsync, full_page_writes and synchronous_commit keep their defaults",
        "fsync = on",
        "synchronous_commit = on",
        "timezone = 'UTC'",
    ]
    if preload:
        lines += [f"shared_preload_libraries = '{preload}'", "timescaledb.telemetry_level = off"]
    return "\n".join(lines) + "\n"


def _timescaledb_available(bin_dir: Path) -> bool:
    return any((bin_dir.parent / "lib").glob("timescaledb*.so"))


def initdb(bin_dir: Path, data_dir: Path) -> None:
    """Create the cluster (trust auth, superuser ``postgres``) unless ``data_dir`` already holds one."""
    if (data_dir / "PG_VERSION").is_file():
        return
    cmd = [str(bin_dir / "initdb"), "-D", str(data_dir), "--auth=trust", f"--username={PG_USER}",
           "--encoding=UTF8", "--locale=C"]
    res = subprocess.run(as_pg_user(cmd), cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"initdb failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    with open(data_dir / "postgresql.conf", "a") as conf:
        conf.write("\ninclude 'runstream.conf'\n")


def start(bin_dir: Path, root: Path, port: int, timeout_s: float) -> None:
    """Write ``runstream.conf`` and run ``pg_ctl start``, which polls until the server accepts."""
    data_dir, sock = root / "data", socket_dir(root)
    if sock:
        Path(sock).mkdir(exist_ok=True)
        if is_root():
            pw = pwd.getpwnam(PG_USER)
            os.chown(sock, pw.pw_uid, pw.pw_gid)
    preload = "timescaledb" if _timescaledb_available(bin_dir) else ""
    (data_dir / "runstream.conf").write_text(render_conf(port, sock, preload=preload))
    cmd = [str(bin_dir / "pg_ctl"), "start", "-D", str(data_dir), "-l", str(root / "postgres.log"),
           "-w", "-t", str(max(1, int(timeout_s)))]
    res = subprocess.run(as_pg_user(cmd), cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"pg_ctl start failed ({res.returncode}): {res.stdout.strip()} {res.stderr.strip()}")


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid recorded in ``postmaster.pid``, if the file exists."""
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    except OSError:
        return None
    return int(first) if re.fullmatch(r"\d+", first.strip()) else None


def is_postmaster_cmdline(args: list[str], data_dir: Path) -> bool:
    """Whether a process command line is the postmaster of ``data_dir``."""
    return bool(args) and Path(args[0]).name in ("postgres", "postmaster") and str(data_dir) in args


def stop(bin_dir: Path, data_dir: Path, timeout_s: float = 60, *, mode: str = "fast") -> bool:
    """``pg_ctl stop -m MODE`` (fast, or immediate: a crash without a checkpoint); True
    when the server is down afterwards (or was not running)."""
    cmd = [str(bin_dir / "pg_ctl"), "stop", "-D", str(data_dir), "-m", mode, "-w", "-t", str(int(timeout_s))]
    res = subprocess.run(as_pg_user(cmd), cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True)
    return res.returncode == 0 or "Is server running?" in res.stderr


def database_url(port: int, *, user: str = DB_ROLE, db: str = DB_NAME) -> str:
    """Connection URL (trust auth, no password) usable by asyncpg and psycopg."""
    return f"postgresql://{user}@127.0.0.1:{port}/{db}"


def probe(url: str) -> bool:
    """True when a connection to ``url`` succeeds."""
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


def ensure_database(port: int) -> None:
    """Create the login superuser role ``runstream`` and its database ``runstream`` if missing."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(database_url(port, user=PG_USER, db="postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DB_ROLE,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(sql.Identifier(DB_ROLE)))
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DB_NAME),
                                                                      sql.Identifier(DB_ROLE)))
