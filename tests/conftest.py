"""Shared fixtures and helpers live in tests/support/ (one module per concern) and are
loaded here as plugins; tests import helpers from there (``from tests.support.waiting
import wait_for``), never from this file or from another test module.

- tests/support/services.py: the session's Kafka, PostgreSQL and `runstream serve`
  (fixtures ``stack``, ``settings``, ``services``, ``workspace``, ``http_workspace``,
  ``session``, ``local_api``, ``db``) and ``start_serve``/``stop`` for extra processes;
- tests/support/pglite.py: a TimescaleDB-enabled PGlite server (fixture ``pg``);
- tests/support/waiting.py: ``wait_for`` and ``eventually``;
- tests/support/names.py: ``unique`` names and ``REPO``;
- tests/support/events.py: the one builder of hand-made events;
- tests/support/sql.py: every query API statement with example parameters;
- tests/support/listening.py: the query API's LISTEN connections as PostgreSQL sees them;
- tests/support/sweep.py: the seed's option 1 as a function;
- tests/support/browser.py: headless Chromium (fixtures ``chromium``, ``ui_page``).
"""

pytest_plugins = ["tests.support.services", "tests.support.pglite", "tests.support.browser"]
