"""A throwaway PostgreSQL cluster (Debian's server build) on 127.0.0.1.

PostgreSQL refuses to run as root, so when we are root every server binary runs as the
``postgres`` system user through ``runuser`` and the cluster's directory belongs to it.

Least privilege: the cluster authenticates every connection with a password
(``scram-sha-256``, local socket and TCP alike). Three roles, their passwords made once
per cluster (:func:`passwords`, ``<root>/passwords.json``, mode 0600): the superuser
``postgres`` (setup only), ``runstream`` (owns the database and its tables: migrations,
processors, gateway, replay; no superuser) and ``runstream_reader`` (the query API: it
may connect and, once ``runstream migrate`` granted it, only SELECT; migration 0008).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

PG_USER = "postgres"
DB_NAME = "runstream"
DB_ROLE = "runstream"
READER_ROLE = "runstream_reader"
"""The query API's role: migration 0008 grants it SELECT on every table, and nothing else."""
PASSWORDS = "passwords.json"
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


SLOW_STATEMENT_MS = 100
"""Statements slower than this are logged (text only, no parameters): the benchmark reads
them per row (``benchmarks.pglog``), and they are the first thing to look at in a test
stack's ``postgres.log`` when something was slow."""


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
        f"log_min_duration_statement = {SLOW_STATEMENT_MS}",
        "log_parameter_max_length = 0",
        "log_checkpoints = on",
    ]
    if preload:
        lines += [f"shared_preload_libraries = '{preload}'", "timescaledb.telemetry_level = off"]
    return "\n".join(lines) + "\n"


def _timescaledb_available(bin_dir: Path) -> bool:
    return any((bin_dir.parent / "lib").glob("timescaledb*.so"))


def passwords(root: Path) -> dict[str, str]:
    """The password of each role of the cluster in ``root``, made the first time (0600 file)."""
    path = root / PASSWORDS
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        pass
    made = {role: secrets.token_urlsafe(24) for role in (PG_USER, DB_ROLE, READER_ROLE)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(made, out)
    return made


def initdb(bin_dir: Path, data_dir: Path, superuser_password: str) -> None:
    """Create the cluster (password auth, superuser ``postgres``) unless ``data_dir`` already holds one."""
    if (data_dir / "PG_VERSION").is_file():
        return
    # initdb reads the superuser's password from a file the server user can read; removed after.
    pwfile = data_dir.parent / ".initdb-pw"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(superuser_password + "\n")
    if is_root():
        pw = pwd.getpwnam(PG_USER)
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    cmd = [str(bin_dir / "initdb"), "-D", str(data_dir), "--auth=scram-sha-256", f"--pwfile={pwfile}",
           f"--username={PG_USER}", "--encoding=UTF8", "--locale=C"]
    try:
        res = subprocess.run(as_pg_user(cmd), cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True)
    finally:
        pwfile.unlink(missing_ok=True)
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


def database_url(port: int, *, user: str = DB_ROLE, db: str = DB_NAME, password: str | None = None) -> str:
    """Connection URL usable by asyncpg and psycopg (with ``password`` when given)."""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}" if password else quote(user, safe="")
    return f"postgresql://{auth}@127.0.0.1:{port}/{db}"


def probe(url: str) -> bool:
    """True when a connection to ``url`` succeeds."""
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


def ensure_database(port: int, pw: dict[str, str]) -> None:
    """Create (or bring up to date) the roles ``runstream`` (login, owner of the database
    ``runstream``, no superuser) and ``runstream_reader`` (login, connect only; its SELECT
    grants come with the migrations), with the passwords ``pw``, and the database."""
    import psycopg
    from psycopg import sql

    admin = database_url(port, user=PG_USER, db="postgres", password=pw[PG_USER])
    with psycopg.connect(admin, autocommit=True) as conn:
        for role, options in ((DB_ROLE, "LOGIN NOSUPERUSER CREATEDB"), (READER_ROLE, "LOGIN NOSUPERUSER")):
            verb = "ALTER" if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() else "CREATE"
            conn.execute(sql.SQL("{} ROLE {} " + options + " PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(role), sql.Literal(pw[role])))
        # The owner may end a stuck session of the reader (tests drop the API's LISTEN this way).
        conn.execute(sql.SQL("GRANT pg_signal_backend TO {}").format(sql.Identifier(DB_ROLE)))
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DB_NAME),
                                                                      sql.Identifier(DB_ROLE)))
    with psycopg.connect(database_url(port, user=PG_USER, password=pw[PG_USER]), autocommit=True) as conn:
        conn.execute("REVOKE ALL ON DATABASE runstream FROM PUBLIC")
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE runstream TO {}").format(sql.Identifier(READER_ROLE)))
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        # CREATE EXTENSION of TimescaleDB needs a superuser: done here, so the owner's
        # migration 0002 finds it (its CREATE EXTENSION IF NOT EXISTS is then a no-op).
        if conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
