"""The run search language: ``?filter=`` of the runs listings, parsed and compiled to SQL.

Grammar (keywords case-insensitive; ``and`` binds tighter than ``or``)::

    filter     := and_expr ("or" and_expr)*
    and_expr   := primary ("and" primary)*
    primary    := "(" filter ")" | field op value | field ["not"] "in" "(" value ("," value)* ")"
    op         := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=" | "like" | "ilike"
    field      := metrics.<name>[.min|.max|.last] | params.<name> | tags.<key>
                | attributes.<status|name|run_id|start_time|end_time|duration|experiment>
                | status | name | run_id | start_time | end_time | duration | experiment
    value      := number | 'string' | "string"     (backslash escapes the quote)

A name segment is ``[A-Za-z0-9_/-]+`` or quoted in backticks (or quotes) for dots, spaces
and anything else: ``metrics.`val loss```. As in MLflow, everything after the prefix is
the name (``metrics.a.b`` is the metric ``a.b``), except a last unquoted ``.min``,
``.max`` or ``.last`` of a metric, which picks that summary (default: the last value).
MLflow's grammar is a subset: its prefixes (``metric``, ``param``, ``parameter(s)``,
``tag``, ``attribute``, ``attr``, ``run``), ``attributes.run_name``/``run_id``/
``start_time``/``end_time``, ``LIKE``/``ILIKE``/``IN``/``NOT IN`` and its status names
``RUNNING``/``FINISHED``/``FAILED``/``KILLED`` (read as running/completed/failed/canceled);
a run id compares in any UUID spelling (MLflow's 32 hex digits too).

Meaning:

* ``params.<name>`` is the run's **parameter** (the ``params`` projection: MLflow's
  log-param, ``run.log_params``), and for a run without that parameter its **property** of
  that name (``start_logging(**props)``, ``runs.properties``), where runs kept params
  before there was a projection of them.
* A number compares numerically: with a metric's summary (float; NaN counts as
  missing), and with a param, tag, or text attribute whose value reads as a number
  (other values never match); a string compares as text (``like``/``ilike`` take SQL
  patterns with ``%`` and ``_``). ``start_time``/``end_time`` take epoch milliseconds (as
  MLflow) or an ISO 8601 string; ``duration`` is seconds. A number must fit a double.
* A run lacking the field never matches the comparison, ``!=`` and ``not in`` included
  (SQL's NULL: there is no negation of whole expressions).

Why a hand-written parser rather than a grammar library (lark): the language is a dozen
tokens and two precedence levels, and every error must name the position and the token
in our words (``filter: unexpected 'and' at position 14; expected a value``), which with
a library means translating its exception types anyway. Compilation is safe by
construction: the compiler writes every identifier and operator from fixed tables, and
every name and value from the user is a bind parameter (``$n``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, TypeAlias

from runstream.query_api.errors import BadRequest
from runstream.schemas.events import STATUSES

__all__ = ["And", "Comparison", "Expr", "Field", "Or", "compile_filter", "parse", "tokenize"]

MAX_FILTER_CHARS = 10_000
"""Longest filter accepted (a 400 beyond)."""
MAX_DEPTH = 50
"""Deepest nesting of parentheses (bounds the parser's recursion)."""

Value: TypeAlias = "str | Decimal"
FieldKind = Literal["metric", "param", "tag", "attribute"]


@dataclass(frozen=True)
class Field:
    """What a comparison reads: ``kind`` and ``name`` (attribute names canonical), and
    for a metric the summary ``agg`` (last, min or max)."""

    kind: FieldKind
    name: str
    agg: str = "last"
    pos: int = 0


@dataclass(frozen=True)
class Comparison:
    """``field op value``; ``op`` canonical (= != < <= > >= like ilike in notin), ``value``
    a tuple for in/notin; ``pos`` is where the value (list) starts."""

    field: Field
    op: str
    value: Value | tuple[Value, ...]
    pos: int


@dataclass(frozen=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Expr, ...]


Expr: TypeAlias = "Comparison | And | Or"

# ---------------------------------------------------------------- tokens

_PREFIXES: dict[str, FieldKind] = {
    "metric": "metric", "metrics": "metric",
    "param": "param", "params": "param", "parameter": "param", "parameters": "param",
    "tag": "tag", "tags": "tag",
    "attribute": "attribute", "attributes": "attribute", "attr": "attribute", "run": "attribute",
}
_ATTRIBUTES = {
    "status": "status", "name": "name", "run_name": "name", "run_id": "run_id", "run_uuid": "run_id",
    "id": "run_id", "start_time": "start_time", "started_at": "start_time", "created": "start_time",
    "end_time": "end_time", "ended_at": "end_time", "duration": "duration", "experiment": "experiment",
}
_AGGREGATES = ("last", "min", "max")
_KEYWORDS = frozenset({"and", "or", "not", "in", "like", "ilike"})
_MLFLOW_STATUSES = {"RUNNING": "running", "FINISHED": "completed", "FAILED": "failed", "KILLED": "canceled"}
_OPERATORS = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

_SPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])")
_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"", re.S)
_BACKTICK = re.compile(r"`([^`]*)`")
_WORD = re.compile(r"[A-Za-z_][\w/-]*")
_SEGMENT = re.compile(r"[\w/-]+")
_OPERATOR = re.compile(r"<=|>=|!=|<>|==|=|<|>")
_ESCAPE = re.compile(r"\\(.)", re.S)
# A number's decimal exponent within a double's range, so no bound value overflows a
# PostgreSQL float8 or numeric.
_MIN_EXPONENT, _MAX_EXPONENT = -307, 307


@dataclass(frozen=True)
class _Token:
    kind: Literal["ident", "kw", "number", "string", "op", "(", ")", ",", "end"]
    text: str
    pos: int
    segments: tuple[tuple[str, bool], ...] = ()
    """For an identifier: its dot-separated parts and whether each was quoted."""
    value: Value = ""


def _error(message: str, pos: int, detail: str = "") -> BadRequest:
    """``filter: <message> at position <pos>[; <detail>]``."""
    return BadRequest(f"filter: {message} at position {pos}" + (f"; {detail}" if detail else ""))


def _unexpected(tok: _Token, expected: str) -> BadRequest:
    what = "end of filter" if tok.kind == "end" else repr(tok.text)
    return BadRequest(f"filter: unexpected {what} at position {tok.pos}; expected {expected}")


def _quoted(text: str, pos: int) -> tuple[str, int] | None:
    """A backtick- or quote-delimited name at ``pos``: (its text, end) or None."""
    m = _BACKTICK.match(text, pos) or _STRING.match(text, pos)
    if m is None:
        return None
    raw = next(g for g in m.groups() if g is not None)
    return (raw if text[pos] == "`" else _ESCAPE.sub(r"\1", raw)), m.end()


def _identifier(text: str, start: int, end: int) -> tuple[_Token, int]:
    segments = [(text[start:end], False)]
    pos = end
    while pos < len(text) and text[pos] == ".":
        pos += 1
        seg = _SEGMENT.match(text, pos)
        quoted = None if seg else _quoted(text, pos)
        if seg:
            segments.append((seg.group(), False))
            pos = seg.end()
        elif quoted:
            segments.append((quoted[0], True))
            pos = quoted[1]
        elif pos < len(text) and text[pos] in "`'\"":
            raise _error(f"unterminated quoted name {text[pos:pos + 20]!r}", pos, "close it with the same quote")
        else:
            raise _error("expected a name after '.'", pos)
    word = segments[0][0].lower()
    kind: Literal["kw", "ident"] = "kw" if len(segments) == 1 and word in _KEYWORDS else "ident"
    return _Token(kind, text[start:pos], start, tuple(segments)), pos


def tokenize(text: str) -> list[_Token]:
    """The tokens of ``text``, ending with an ``end`` token; 400 on a character or
    quote that starts no token."""
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        if m := _SPACE.match(text, pos):
            pos = m.end()
        elif m := _NUMBER.match(text, pos):
            number = Decimal(m.group())
            if number and not _MIN_EXPONENT <= number.adjusted() <= _MAX_EXPONENT:
                raise _error(f"number out of range {m.group()!r}", pos, "a value must fit a double")
            tokens.append(_Token("number", m.group(), pos, value=number))
            pos = m.end()
        elif text[pos] in "'\"":
            if not (m := _STRING.match(text, pos)):
                raise _error(f"unterminated string {text[pos:pos + 20]!r}", pos, "close it with the same quote")
            raw = m.group(1) if m.group(1) is not None else m.group(2)
            tokens.append(_Token("string", m.group(), pos, value=_ESCAPE.sub(r"\1", raw)))
            pos = m.end()
        elif m := _WORD.match(text, pos):
            token, pos = _identifier(text, pos, m.end())
            tokens.append(token)
        elif m := _OPERATOR.match(text, pos):
            tokens.append(_Token("op", m.group(), pos))
            pos = m.end()
        elif text[pos] in "(),":
            tokens.append(_Token(text[pos], text[pos], pos))  # type: ignore[arg-type]  # one of the three
            pos += 1
        elif text[pos] == "`":
            raise _error("unexpected '`'", pos, "a field starts with metrics., params., tags. or attributes.")
        else:
            raise _error(f"unexpected {text[pos]!r}", pos)
    tokens.append(_Token("end", "", len(text)))
    return tokens


# ---------------------------------------------------------------- parser

_FIELD_EXPECTED = "a field (metrics.<name>, params.<name>, tags.<key>, attributes.<name>) or '('"
_OP_EXPECTED = "an operator (= != < <= > >= like ilike in, not in)"


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok.kind == "kw" and tok.text.lower() == word:
            self.i += 1
            return True
        return False

    def filter(self) -> Expr:
        items = [self.conjunction()]
        while self.keyword("or"):
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self) -> Expr:
        items = [self.primary()]
        while self.keyword("and"):
            items.append(self.primary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def primary(self) -> Expr:
        tok = self.take()
        if tok.kind == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _error(f"more than {MAX_DEPTH} nested parentheses", tok.pos)
            inner = self.filter()
            close = self.take()
            if close.kind != ")":
                raise _unexpected(close, "'and', 'or' or ')'")
            self.depth -= 1
            return inner
        if tok.kind != "ident":
            raise _unexpected(tok, _FIELD_EXPECTED)
        field = _field(tok)
        return self.comparison(field)

    def comparison(self, field: Field) -> Comparison:
        tok = self.take()
        if tok.kind == "op":
            op = _OPERATORS[tok.text]
        elif tok.kind == "kw" and tok.text.lower() in ("like", "ilike", "in"):
            op = tok.text.lower()
        elif tok.kind == "kw" and tok.text.lower() == "not":
            after = self.take()
            if not (after.kind == "kw" and after.text.lower() == "in"):
                raise _unexpected(after, "'in' after 'not'")
            op = "notin"
        else:
            raise _unexpected(tok, _OP_EXPECTED)
        if op in ("in", "notin"):
            start = self.take()
            if start.kind != "(":
                raise _unexpected(start, "'(' and a list of values")
            values = [self.value()]
            while (sep := self.take()).kind == ",":
                values.append(self.value())
            if sep.kind != ")":
                raise _unexpected(sep, "',' or ')'")
            return _checked(Comparison(field, op, tuple(values), start.pos))
        pos = self.peek().pos
        return _checked(Comparison(field, op, self.value(), pos))

    def value(self) -> Value:
        tok = self.take()
        if tok.kind not in ("number", "string"):
            raise _unexpected(tok, "a value (a number or a quoted string)")
        return tok.value


def _field(tok: _Token) -> Field:
    """The field an identifier names, or 400 naming it."""
    (head, head_quoted), rest = tok.segments[0], tok.segments[1:]
    prefix = _PREFIXES.get(head.lower())
    if not rest:
        if head.lower() in _ATTRIBUTES and not head_quoted:
            return Field("attribute", _ATTRIBUTES[head.lower()], pos=tok.pos)
        raise _error(f"unknown field {tok.text!r}", tok.pos, "expected metrics.<name>, params.<name>, "
                     f"tags.<key>, attributes.<name> or one of {_ATTRIBUTE_NAMES}")
    if prefix is None:
        raise _error(f"unknown field {tok.text!r}", tok.pos,
                     f"{head!r} is not metrics, params, tags or attributes")
    names = [name for name, _ in rest]
    if prefix == "metric":
        last, last_quoted = rest[-1]
        if len(rest) > 1 and not last_quoted and last.lower() in _AGGREGATES:
            return Field("metric", ".".join(names[:-1]), last.lower(), tok.pos)
        return Field("metric", ".".join(names), pos=tok.pos)
    if prefix == "attribute":
        attribute = _ATTRIBUTES.get(".".join(names).lower())
        if attribute is None:
            raise _error(f"unknown attribute {tok.text!r}", tok.pos, f"expected one of {_ATTRIBUTE_NAMES}")
        return Field("attribute", attribute, pos=tok.pos)
    return Field(prefix, ".".join(names), pos=tok.pos)


_ATTRIBUTE_NAMES = ", ".join(sorted(set(_ATTRIBUTES.values())))
_NO_PATTERN = {"metric", "start_time", "end_time", "duration"}


def _checked(c: Comparison) -> Comparison:
    """400 for a comparison whose value cannot apply to its field."""
    values = c.value if isinstance(c.value, tuple) else (c.value,)
    kind = c.field.kind if c.field.kind != "attribute" else c.field.name
    if c.op in ("like", "ilike") and (kind in _NO_PATTERN or not isinstance(c.value, str)):
        raise _error(f"unexpected {c.op} on {_describe(c)}", c.pos, "like/ilike take a quoted pattern and "
                     "a text field (params, tags, status, name, run_id, experiment)")
    numeric = c.field.kind == "metric" or c.field.name == "duration" and c.field.kind == "attribute"
    if numeric and not all(isinstance(v, Decimal) for v in values):
        raise _error(f"unexpected string for {_describe(c)}", c.pos, "it compares with numbers")
    if len({isinstance(v, str) for v in values}) > 1:
        raise _error("unexpected mix of numbers and strings", c.pos, "a list holds one or the other")
    if kind in ("start_time", "end_time"):
        if isinstance(c.value, tuple):
            raise _error(f"unexpected list for {_describe(c)}", c.pos, "compare a time with = != < <= > >=")
        _instant(c.value, c.pos)
    return c


def _describe(c: Comparison) -> str:
    f = c.field
    return {"metric": f"metrics.{f.name}", "param": f"params.{f.name}", "tag": f"tags.{f.name}",
            "attribute": f"attributes.{f.name}"}[f.kind]


def _instant(value: Value, pos: int) -> datetime:
    """A time value (ISO 8601, naive = UTC; or epoch milliseconds) as an aware datetime."""
    try:
        if isinstance(value, Decimal):
            return datetime.fromtimestamp(float(value) / 1000, UTC)
        t = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        raise _error(f"invalid time {str(value)!r}", pos,
                     "expected ISO 8601 (2026-01-01T12:00:00Z) or epoch milliseconds in years 1..9999") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse(text: str) -> Expr:
    """The expression of a filter string, or :class:`BadRequest` naming the position
    (0-based character offset) and the offending token."""
    if len(text) > MAX_FILTER_CHARS:
        raise BadRequest(f"filter: longer than {MAX_FILTER_CHARS} characters ({len(text)})")
    # PostgreSQL text holds neither NUL nor invalid UTF-8: refused here, not a 500 there.
    bad = next((i for i, ch in enumerate(text) if ch == "\x00" or "\ud800" <= ch <= "\udfff"), None)
    if bad is not None:
        raise _error(f"unexpected {text[bad]!r}", bad, "NUL and invalid UTF-8 cannot be searched for")
    parser = _Parser(text)
    if parser.peek().kind == "end":
        raise _unexpected(parser.peek(), _FIELD_EXPECTED)
    expr = parser.filter()
    end = parser.take()
    if end.kind != "end":
        raise _unexpected(end, "'and', 'or' or end of filter")
    return expr


# ---------------------------------------------------------------- compiler

_SQL_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "like": "LIKE", "ilike": "ILIKE"}
_SUMMARY_COLUMNS = {"last": "last_value", "min": "min_value", "max": "max_value"}
# A text value that PostgreSQL's numeric input accepts (exponent bounded: never overflows).
_NUMERIC_TEXT = r"'^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d{1,4})?\s*$'"
_TEXT_ATTRIBUTES = {"status": "r.status", "name": "r.name", "run_id": "r.run_id::text",
                    "experiment": "r.experiment"}
_TIME_ATTRIBUTES = {"start_time": "r.started_at", "end_time": "r.ended_at"}


class _Compiler:
    def __init__(self, first: int) -> None:
        self.first = first
        self.args: list[Any] = []

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${self.first + len(self.args) - 1}"

    def expr(self, e: Expr) -> str:
        if isinstance(e, Comparison):
            return self.comparison(e)
        joiner = " AND " if isinstance(e, And) else " OR "
        return "(" + joiner.join(self.expr(item) for item in e.items) + ")"

    def comparison(self, c: Comparison) -> str:
        f = c.field
        if f.kind == "metric":
            col = f"s.{_SUMMARY_COLUMNS[f.agg]}"
            return (f"EXISTS (SELECT 1 FROM metric_summaries s WHERE s.run_id = r.run_id AND s.name = "
                    f"{self.param(f.name)}::text AND {col} <> 'NaN'::float8 AND {self.number(col, c, 'float8')})")
        if f.kind == "param":
            name = self.param(f.name)
            return self.text(f"COALESCE((SELECT p.value FROM params p WHERE p.run_id = r.run_id AND p.key = {name}::text), "
                             f"r.properties ->> {name}::text)", c)
        if f.kind == "tag":
            return (f"EXISTS (SELECT 1 FROM tags t WHERE t.run_id = r.run_id AND t.key = {self.param(f.name)}::text "
                    f"AND {self.text('t.value', c)})")
        if f.name in _TIME_ATTRIBUTES:
            instant = _instant(c.value, c.pos)  # type: ignore[arg-type]  # _checked refused lists
            return f"{_TIME_ATTRIBUTES[f.name]} {_SQL_OPS[c.op]} {self.param(instant)}::timestamptz"
        if f.name == "duration":
            return self.number("date_part('epoch', r.ended_at - r.started_at)", c, "float8")
        if f.name == "status":
            c = Comparison(f, c.op, _statuses(c), c.pos)
        elif f.name == "run_id":
            c = Comparison(f, c.op, _run_ids(c), c.pos)
        return self.text(_TEXT_ATTRIBUTES[f.name], c)

    def number(self, col: str, c: Comparison, sql_type: str) -> str:
        """``col op value`` for a numeric column (values bound as ``sql_type``)."""
        cast = float if sql_type == "float8" else Decimal
        if isinstance(c.value, tuple):
            quantifier = "= ANY" if c.op == "in" else "<> ALL"
            return f"{col} {quantifier}({self.param([cast(v) for v in c.value])}::{sql_type}[])"
        return f"{col} {_SQL_OPS[c.op]} {self.param(cast(c.value))}::{sql_type}"

    def text(self, col: str, c: Comparison) -> str:
        """``col op value`` for a text column: as text for strings, as numbers (where the
        text reads as one) for numbers."""
        first = c.value[0] if isinstance(c.value, tuple) else c.value
        if isinstance(first, Decimal):
            as_number = f"(CASE WHEN {col} ~ {_NUMERIC_TEXT} THEN ({col})::numeric END)"
            return self.number(as_number, c, "numeric")
        if isinstance(c.value, tuple):
            quantifier = "= ANY" if c.op == "in" else "<> ALL"
            return f"{col} {quantifier}({self.param(list(c.value))}::text[])"
        return f"{col} {_SQL_OPS[c.op]} {self.param(c.value)}::text"


def _statuses(c: Comparison) -> Value | tuple[Value, ...]:
    """MLflow's status names (any case) and ours (any case) as ours; patterns as given."""
    if c.op in ("like", "ilike"):
        return c.value

    def one(v: Value) -> Value:
        if not isinstance(v, str):
            return v
        return v.lower() if v.lower() in STATUSES else _MLFLOW_STATUSES.get(v.upper(), v)

    return tuple(one(v) for v in c.value) if isinstance(c.value, tuple) else one(c.value)


def _run_ids(c: Comparison) -> Value | tuple[Value, ...]:
    """Run ids in any UUID spelling (MLflow's 32 hex digits too) as PostgreSQL writes them;
    patterns and other text as given."""
    if c.op in ("like", "ilike"):
        return c.value

    def one(v: Value) -> Value:
        try:
            return str(uuid.UUID(v)) if isinstance(v, str) else v
        except ValueError:
            return v

    return tuple(one(v) for v in c.value) if isinstance(c.value, tuple) else one(c.value)


def compile_filter(expr: Expr, first_param: int) -> tuple[str, list[Any]]:
    """SQL for a WHERE clause over ``runs r`` and its bind values, numbered from
    ``$first_param``. Identifiers and operators come from this module's tables; every
    name and value given by the user is in the returned values."""
    compiler = _Compiler(first_param)
    return compiler.expr(expr), compiler.args

