"""Private state a few tests assert on, read here so production code keeps no seams for tests."""

from __future__ import annotations

from query_api.live import Listener


def listener_pid(listener: Listener) -> int | None:
    """The PostgreSQL backend pid of ``listener``'s LISTEN connection, while it is open
    (tests terminate that backend to prove the listener reconnects)."""
    conn = listener._conn
    return None if conn is None or conn.is_closed() else conn.get_server_pid()
