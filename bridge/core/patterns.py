"""EventBridge event patterns: validation and matching, as pure logic.

The local bus routes every event through every rule, so a pattern is checked and
compiled once (:class:`Pattern`) and matching is then a walk over small closures.
:func:`validate_pattern` follows the rules EventBridge's ``PutRule`` applies (as its
documentation and the open-source Event Ruler behind it state them), so a pattern
that works offline should deploy unchanged, and one AWS would refuse is refused here
first, with one line saying what is wrong and where.

Semantics worth knowing (all from the AWS docs / Event Ruler):

* A pattern field holds an array of alternatives; the field matches if *any* value
  at that place in the event satisfies *any* alternative. Fields are AND-ed.
* Only leaves carry values. An object in the event is not a value, an array is the
  set of its elements (nested arrays are crushed), so ``[]`` holds no value at all.
  Hence ``{"exists": true}`` is false for an object or an empty array, and
  ``{"exists": false}`` is true for them; ``null`` *is* a value.
* Where the event has an array of objects under a nested pattern, one element must
  satisfy the whole sub-pattern ("array consistency").
* Numbers compare as numbers (``5`` matches ``5.0``); booleans are never numbers.
  ``numeric`` works within ±5.0e9 at six decimal places, like EventBridge.
* ``anything-but`` needs a value to be present and matches a value of any other
  type (``{"anything-but": "x"}`` matches ``3`` and ``null``): our reading of Event
  Ruler, where it means "every value but these", and what moto does too.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import lru_cache
from typing import Any

from bridge.core.errors import ValidationError

__all__ = ["Pattern", "PatternError", "matches", "validate_pattern"]


class PatternError(ValidationError):
    """An event pattern EventBridge would refuse; the message says what and where.

    ``path`` (dotted, "" for the pattern as a whole) and ``reason`` are the two parts,
    for callers that place the error themselves (a subscriptions file's line).
    """

    def __init__(self, reason: str, path: str = "", text: str | None = None) -> None:
        super().__init__(text or f"{path or 'pattern'}: {reason}")
        self.path = path
        self.reason = reason


# A compiled test of one leaf value of the event.
ValueTest = Callable[[Any], bool]

_MISSING: Any = object()
_OR = "$or"
_OPERATORS = (
    "prefix",
    "suffix",
    "anything-but",
    "numeric",
    "exists",
    "equals-ignore-case",
    "wildcard",
    "cidr",
)
_ANYTHING_BUT_OPERATORS = ("prefix", "suffix", "equals-ignore-case", "wildcard")
_LOWER_BOUNDS = (">", ">=")
_UPPER_BOUNDS = ("<", "<=")
# Event Ruler turns numbers into fixed-point strings: +-5e9, 6 decimal places.
_NUMERIC_LIMIT = 5.0e9
_NUMERIC_SCALE = 1e6


# --------------------------------------------------------------------------- values


def _is_number(value: Any) -> bool:
    """JSON numbers, and Decimal (DynamoDB's numbers); bool is an int in Python, not here."""
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _comparable(number: Any) -> int | None:
    """The fixed-point key EventBridge compares numbers by, or None if out of its range.

    Event Ruler computes ``(long)(1e6 * (5e9 + x))`` in doubles; doing the same float
    arithmetic here gives the same keys, so ``numeric`` agrees with AWS even on the
    seventh decimal. Values outside +-5e9 (or NaN/inf) never satisfy ``numeric``.
    """
    try:
        as_float = float(number)
    except (OverflowError, ValueError):
        return None
    if not -_NUMERIC_LIMIT <= as_float <= _NUMERIC_LIMIT:  # also False for NaN
        return None
    return int(_NUMERIC_SCALE * (_NUMERIC_LIMIT + as_float))


def _leaves(value: Any) -> Iterator[Any]:
    """The values a field holds: itself, or its array's elements (objects are not values)."""
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif not isinstance(value, dict) and value is not _MISSING:
        yield value


def _objects(value: Any) -> list[dict[str, Any]]:
    """The objects a nested pattern is tried against: the object, or an array's objects."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        found: list[dict[str, Any]] = []
        for item in value:
            found.extend(_objects(item))
        return found
    return []


# --------------------------------------------------------------------------- errors


def _show(value: Any) -> str:
    """A short JSON rendering of a bad value for an error message."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(path: str, message: str) -> PatternError:
    return PatternError(message, path)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --------------------------------------------------------------------------- leaf tests


def _string_arg(path: str, operator: str, argument: Any) -> str:
    if not isinstance(argument, str):
        raise _fail(path, f'"{operator}" needs a string, got {_show(argument)}')
    return argument


def _number_arg(path: str, operator: str, argument: Any) -> int | float:
    if not _is_number(argument) or _comparable(argument) is None:
        raise _fail(
            path,
            f'"{operator}" needs a number between -5e9 and 5e9, got {_show(argument)}',
        )
    number: int | float = argument
    return number


def _affix_test(path: str, operator: str, argument: Any) -> ValueTest:
    """``prefix`` / ``suffix``, plain or ``{"equals-ignore-case": s}``."""
    ignore_case = isinstance(argument, dict)
    if ignore_case:
        if list(argument) != ["equals-ignore-case"]:
            raise _fail(
                path,
                f'"{operator}" takes a string or {{"equals-ignore-case": string}}, '
                f"got {_show(argument)}",
            )
        operator_name = f"{operator}.equals-ignore-case"
        text = _string_arg(path, operator_name, argument["equals-ignore-case"])
    else:
        text = _string_arg(path, operator, argument)
    if ignore_case:
        folded = text.lower()
        if operator == "prefix":
            return lambda v: type(v) is str and v.lower().startswith(folded)
        return lambda v: type(v) is str and v.lower().endswith(folded)
    if operator == "prefix":
        return lambda v: type(v) is str and v.startswith(text)
    return lambda v: type(v) is str and v.endswith(text)


def _ignore_case_test(path: str, argument: Any) -> ValueTest:
    folded = _string_arg(path, "equals-ignore-case", argument).lower()
    return lambda v: type(v) is str and v.lower() == folded


def _wildcard_regex(path: str, operator: str, argument: Any) -> re.Pattern[str]:
    """``*`` is any run of characters; ``\\*`` and ``\\\\`` are a literal star and backslash.

    EventBridge refuses ``**`` and a backslash before anything else, so we do too.
    """
    text = _string_arg(path, operator, argument)
    parts: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "*":
            if text.startswith("**", index):
                raise _fail(path, f'"{operator}" may not have consecutive "*" in {_show(text)}')
            parts.append(".*")
        elif char == "\\":
            following = text[index + 1 : index + 2]
            if following not in ("*", "\\"):
                raise _fail(
                    path, f'"{operator}" has an invalid escape at position {index} in {_show(text)}'
                )
            parts.append(re.escape(following))
            index += 1
        else:
            parts.append(re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


def _wildcard_test(path: str, argument: Any) -> ValueTest:
    regex = _wildcard_regex(path, "wildcard", argument)
    return lambda v: type(v) is str and regex.fullmatch(v) is not None


def _cidr_test(path: str, argument: Any) -> ValueTest:
    text = _string_arg(path, "cidr", argument)
    try:
        if "/" not in text:
            raise ValueError("a /prefix-length is required")
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise _fail(
            path, f'"cidr" needs an IP network like "10.0.0.0/24", got {_show(text)}'
        ) from exc

    def test(value: Any) -> bool:
        if type(value) is not str:
            return False
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        # An IPv4 address is never inside an IPv6 network and vice versa.
        return address.version == network.version and address in network

    return test


def _numeric_test(path: str, argument: Any) -> ValueTest:
    """``["=", x]``, one bound, or a lower bound (``>``/``>=``) then an upper (``<``/``<=``)."""
    if not isinstance(argument, list) or len(argument) not in (2, 4):
        raise _fail(
            path, f'"numeric" needs [op, number] or [op, number, op, number], got {_show(argument)}'
        )
    first, low = argument[0], argument[1]
    if first not in ("=", *_LOWER_BOUNDS, *_UPPER_BOUNDS):
        raise _fail(path, f'"numeric" has an unknown operator {_show(first)}')
    bound = _comparable(_number_arg(path, f"numeric {first}", low))
    if len(argument) == 2:
        return _range_test(first, bound, None, None)
    second, high = argument[2], argument[3]
    if first not in _LOWER_BOUNDS or second not in _UPPER_BOUNDS:
        raise _fail(
            path,
            f'"numeric" ranges are [">" or ">=", low, "<" or "<=", high], got {_show(argument)}',
        )
    top = _comparable(_number_arg(path, f"numeric {second}", high))
    if not low < high:
        raise _fail(path, f'"numeric" range is empty: {_show(low)} is not below {_show(high)}')
    return _range_test(first, bound, second, top)


def _range_test(first: str, bound: Any, second: str | None, top: Any) -> ValueTest:
    compare: dict[str, Callable[[int, int], bool]] = {
        "=": int.__eq__,
        ">": int.__gt__,
        ">=": int.__ge__,
        "<": int.__lt__,
        "<=": int.__le__,
    }
    check_first = compare[first]
    check_second = compare[second] if second else None

    def test(value: Any) -> bool:
        if not _is_number(value):
            return False
        key = _comparable(value)
        if key is None or not check_first(key, bound):
            return False
        return check_second is None or check_second(key, top)

    return test


def _exists_flag(path: str, argument: Any) -> bool:
    if not isinstance(argument, bool):
        raise _fail(path, f'"exists" needs true or false, got {_show(argument)}')
    return argument


# --------------------------------------------------------------------------- anything-but


def _anything_but_test(path: str, argument: Any) -> ValueTest:
    """Not equal to the value(s), or not matching the inner prefix/suffix/... test."""
    if isinstance(argument, dict):
        return _anything_but_operator(path, argument)
    values = argument if isinstance(argument, list) else [argument]
    if not values:
        raise _fail(path, '"anything-but" may not be an empty array')
    if all(isinstance(v, str) for v in values):
        excluded = frozenset(values)
        return lambda v: not (type(v) is str and v in excluded)
    if all(_is_number(v) for v in values):
        keys = frozenset(_comparable(_number_arg(path, "anything-but", v)) for v in values)
        return lambda v: not (_is_number(v) and _comparable(v) in keys)
    raise _fail(
        path,
        '"anything-but" takes a string, a number, an array of only strings or only '
        f"numbers, or an operator object, got {_show(argument)}",
    )


def _anything_but_operator(path: str, argument: dict[str, Any]) -> ValueTest:
    if len(argument) != 1 or next(iter(argument)) not in _ANYTHING_BUT_OPERATORS:
        raise _fail(
            path,
            '"anything-but" objects take one of "prefix", "suffix", "equals-ignore-case", '
            f'"wildcard", got {_show(argument)}',
        )
    operator, inner = next(iter(argument.items()))
    where = f"anything-but.{operator}"
    if operator in ("prefix", "suffix"):
        if _string_arg(path, where, inner) == "":
            raise _fail(path, f'"{where}" may not be empty')
        positive = _affix_test(path, operator, inner)
    else:
        inner_values = inner if isinstance(inner, list) else [inner]
        if not inner_values:
            raise _fail(path, f'"{where}" may not be an empty array')
        build = _ignore_case_test if operator == "equals-ignore-case" else _wildcard_test
        tests = [build(path, value) for value in inner_values]
        positive = tests[0] if len(tests) == 1 else (lambda v: any(t(v) for t in tests))
    return lambda v: not positive(v)


# --------------------------------------------------------------------------- compiled nodes


class _Leaf:
    """The alternatives of one pattern array, tested against the values of one field."""

    __slots__ = (
        "strings",
        "numbers",
        "big_numbers",
        "literals",
        "tests",
        "if_present",
        "if_absent",
    )

    def __init__(self) -> None:
        self.strings: set[str] = set()
        self.numbers: set[int] = set()  # comparable keys of numbers within +-5e9
        self.big_numbers: set[Any] = set()  # numbers beyond: compared as they are
        self.literals: list[Any] = []  # true / false / null, compared by identity
        self.tests: list[ValueTest] = []
        self.if_present = False  # {"exists": true}
        self.if_absent = False  # {"exists": false}

    def matches(self, field: Any) -> bool:
        if field is _MISSING or isinstance(field, dict):
            return self.if_absent
        if not isinstance(field, list):  # the common case: one scalar
            return self.if_present or self._matches_value(field)
        values = list(_leaves(field))
        if not values:
            return self.if_absent
        return self.if_present or any(self._matches_value(value) for value in values)

    def _matches_value(self, value: Any) -> bool:
        if type(value) is str:
            if value in self.strings:
                return True
        elif _is_number(value):
            key = _comparable(value)
            if key in self.numbers if key is not None else value in self.big_numbers:
                return True
        elif any(value is literal for literal in self.literals):
            return True
        return any(test(value) for test in self.tests)


class _Node:
    """An object of the pattern: every field must match, and every ``$or`` group."""

    __slots__ = ("leaves", "children", "alternatives")

    def __init__(self) -> None:
        self.leaves: list[tuple[str, _Leaf]] = []
        self.children: list[tuple[str, _Node]] = []
        self.alternatives: list[list[_Node]] = []

    def matches(self, event: dict[str, Any]) -> bool:
        for key, leaf in self.leaves:
            if not leaf.matches(event.get(key, _MISSING)):
                return False
        for key, child in self.children:
            if not child.matches_field(event.get(key, _MISSING)):
                return False
        return all(any(node.matches(event) for node in group) for group in self.alternatives)

    def matches_field(self, field: Any) -> bool:
        """A nested pattern against a field: its object, one of its array's objects, or none."""
        objects = _objects(field)
        if not objects:
            # Nothing below this point exists: only "exists": false can still hold.
            return self.matches({})
        return any(self.matches(obj) for obj in objects)


def _compile_leaf(path: str, alternatives: list[Any]) -> _Leaf:
    if not alternatives:
        raise _fail(path, "empty arrays are not allowed")
    leaf = _Leaf()
    for alternative in alternatives:
        if isinstance(alternative, dict):
            _add_operator(leaf, path, alternative)
        elif isinstance(alternative, str):
            leaf.strings.add(alternative)
        elif _is_number(alternative):
            _add_number(leaf, path, alternative)
        elif alternative is None or isinstance(alternative, bool):
            leaf.literals.append(alternative)
        else:
            raise _fail(
                path,
                "values must be strings, numbers, true, false, null or operator objects, "
                f"got {_show(alternative)}",
            )
    return leaf


def _add_number(leaf: _Leaf, path: str, number: Any) -> None:
    """Exact numbers match numerically; ones beyond +-5e9 (account ids...) by plain equality."""
    if not math.isfinite(number):  # NaN and Infinity are not JSON, though Python parses them
        raise _fail(path, f"{_show(number)} is not a JSON number")
    key = _comparable(number)
    if key is None:
        leaf.big_numbers.add(number)
    else:
        leaf.numbers.add(key)


def _add_operator(leaf: _Leaf, path: str, expression: dict[str, Any]) -> None:
    if len(expression) != 1:
        raise _fail(path, f"an operator object needs exactly one key, got {_show(expression)}")
    operator, argument = next(iter(expression.items()))
    if operator == "exists":
        if _exists_flag(path, argument):
            leaf.if_present = True
        else:
            leaf.if_absent = True
    elif operator in ("prefix", "suffix"):
        leaf.tests.append(_affix_test(path, operator, argument))
    elif operator == "equals-ignore-case":
        leaf.tests.append(_ignore_case_test(path, argument))
    elif operator == "wildcard":
        leaf.tests.append(_wildcard_test(path, argument))
    elif operator == "anything-but":
        leaf.tests.append(_anything_but_test(path, argument))
    elif operator == "numeric":
        leaf.tests.append(_numeric_test(path, argument))
    elif operator == "cidr":
        leaf.tests.append(_cidr_test(path, argument))
    else:
        raise _fail(path, f"unknown operator {_show(operator)}")


def _compile_object(path: str, pattern: Any, inside_or: bool) -> _Node:
    if not isinstance(pattern, dict):
        raise _fail(path, f"must be a JSON object, got {_show(pattern)}")
    if not pattern:
        raise _fail(path, "empty objects are not allowed")
    node = _Node()
    for key, value in pattern.items():
        where = _join(path, key)
        if key == _OR:
            node.alternatives.append(_compile_or(where, value))
            continue
        if inside_or and key in _OPERATORS:
            # Event Ruler refuses operator names as fields inside $or: the usual mistake
            # is "$or": [{"prefix": ...}, ...], which belongs inside a field's array.
            raise _fail(where, f'"{key}" is an operator and cannot be a field name inside $or')
        if isinstance(value, dict):
            node.children.append((key, _compile_object(where, value, inside_or)))
        elif isinstance(value, list):
            node.leaves.append((key, _compile_leaf(where, value)))
        else:
            raise _fail(where, f"must be an object or an array, got {_show(value)}")
    return node


def _compile_or(path: str, value: Any) -> list[_Node]:
    if not isinstance(value, list) or len(value) < 2:
        raise _fail(path, f"needs an array of at least 2 objects, got {_show(value)}")
    return [_compile_object(f"{path}[{i}]", item, True) for i, item in enumerate(value)]


# --------------------------------------------------------------------------- public API


def _parse(pattern: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(pattern, str | bytes):
        try:
            pattern = json.loads(pattern)
        except ValueError as exc:
            raise PatternError(
                f"not valid JSON: {exc}", text=f"pattern is not valid JSON: {exc}"
            ) from None
    if not isinstance(pattern, dict):
        raise PatternError(
            f"must be a JSON object, got {_show(pattern)}",
            text=f"pattern must be a JSON object, got {_show(pattern)}",
        )
    return pattern


def validate_pattern(pattern: dict[str, Any] | str) -> dict[str, Any]:
    """Parse (if JSON text) and check a pattern as EventBridge would; return it as a dict.

    Raises :class:`PatternError` with a one-line message naming the field at fault.
    """
    parsed = _parse(pattern)
    _compile_object("", parsed, False)
    return parsed


class Pattern:
    """A validated, compiled pattern: build once per rule, call :meth:`matches` per event."""

    __slots__ = ("source", "_root")

    def __init__(self, pattern: dict[str, Any] | str) -> None:
        self.source: dict[str, Any] = _parse(pattern)
        self._root = _compile_object("", self.source, False)

    def matches(self, event: Any) -> bool:
        """Whether the event (a parsed JSON object) matches this pattern."""
        return self._root.matches(event if isinstance(event, dict) else {})

    def __repr__(self) -> str:
        return f"Pattern({json.dumps(self.source, sort_keys=True)})"


@lru_cache(maxsize=256)
def _cached(canonical: str) -> Pattern:
    return Pattern(canonical)


def matches(pattern: dict[str, Any] | str | Pattern, event: Any) -> bool:
    """Whether ``event`` matches ``pattern`` (validated; raises PatternError if invalid).

    Recently used patterns are kept compiled, but hot paths should hold a
    :class:`Pattern` instead of paying for the canonical JSON key on every call.
    """
    if isinstance(pattern, Pattern):
        return pattern.matches(event)
    if isinstance(pattern, dict):
        try:
            pattern = json.dumps(pattern, sort_keys=True)
        except (TypeError, ValueError):
            return Pattern(pattern).matches(event)  # not JSON-able: let Pattern explain
    return _cached(pattern).matches(event)
