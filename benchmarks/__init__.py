"""The benchmark harness: ``python -m benchmarks`` (or ``runstream bench``).

It starts its own Kafka and PostgreSQL (``runstream.devstack``), one processor process
and one query-API process (as in production), runs every row of SPEC §9 against them,
prints a table with each number's ratio to its baseline and target, writes JSON, and
stops everything. All traffic stays on 127.0.0.1. See docs/PERFORMANCE.md.
"""
