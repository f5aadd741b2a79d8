"""A real database rejection on demand: a row trigger on metric_points that refuses one
step of one run (what a value PostgreSQL cannot store does), scoped to a fresh run id so
tests sharing the database are not touched. The "fix" drops it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def reject_step(db: Any, run_id: str, step: int) -> Iterator[Callable[[], None]]:
    """While open, the database rejects ``run_id``'s metric points at ``step``; yields the fix."""
    suffix = uuid.uuid4().hex[:10]
    fn, trig = f"test_reject_fn_{suffix}", f"test_reject_trg_{suffix}"
    db.execute(f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS "
               f"$$BEGIN RAISE EXCEPTION 'test rejects step {step} of run %', NEW.run_id; END$$")
    db.execute(f"CREATE TRIGGER {trig} BEFORE INSERT ON metric_points FOR EACH ROW "
               f"WHEN (NEW.run_id = '{uuid.UUID(run_id)}' AND NEW.step = {int(step)}) EXECUTE FUNCTION {fn}()")
    dropped = False

    def fix() -> None:
        nonlocal dropped
        if not dropped:
            db.execute(f"DROP TRIGGER {trig} ON metric_points")
            db.execute(f"DROP FUNCTION {fn}()")
            dropped = True

    try:
        yield fix
    finally:
        fix()
