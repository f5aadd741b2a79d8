"""How metric values travel as JSON.

Values are bool, int, float or str. JSON has no NaN or infinities (orjson writes NaN as
null), so a non-finite float travels as a one-key object: ``{"f": "NaN"}``,
``{"f": "Infinity"}`` or ``{"f": "-Infinity"}``. Every edge uses these two functions.
"""

from __future__ import annotations

import math
from typing import Any

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

Scalar = bool | int | float | str


def encode(value: Scalar) -> Any:
    """Return ``value`` in its JSON form (non-finite floats become ``{"f": ...}``)."""
    if value.__class__ is float and not math.isfinite(value):  # type: ignore[arg-type]
        if value != value:
            return {"f": "NaN"}
        return {"f": "Infinity" if value > 0 else "-Infinity"}  # type: ignore[operator]
    return value


def decode(value: Any) -> Scalar:
    """Inverse of :func:`encode` for a value already parsed from JSON."""
    if value.__class__ is dict:
        return NON_FINITE[value["f"]]
    return value  # type: ignore[no-any-return]
