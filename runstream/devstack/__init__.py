"""Local Kafka 3.9.1 (KRaft) and PostgreSQL on 127.0.0.1 for development, tests and CI.

``up(state_dir)`` starts both and returns a :class:`StackInfo`; ``down(state_dir)``
stops them (also from another process); ``read_info(state_dir)`` describes a running
stack. Command line: ``python -m runstream.devstack up|down|status [--state-dir DIR] [--brokers N]``.
"""

from runstream.devstack.stack import DevstackError, StackInfo, broker_status, down, main, read_info, start_broker, up

__all__ = ["DevstackError", "StackInfo", "broker_status", "down", "main", "read_info", "start_broker", "up"]
