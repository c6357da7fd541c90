"""Checks for values that arrive from outside: text, JSON documents, endpoint URLs.

The same faults reach the project through argv, stdin, files and HTTP bodies, and
each one used to surface far from where it came in — as a ``UnicodeEncodeError``
in SQLite, a ``RecursionError`` in ``json``, a ``ValueError`` inside botocore. They
are refused here, where the value enters, with a reason a user can act on:

* **Text UTF-8 cannot carry.** A Python ``str`` can hold lone surrogates: the JSON
  escape ``"\\ud800"`` decodes to one, and bytes that are not UTF-8 in argv or stdin
  become ``\\udc80``–``\\udcff`` under Python's ``surrogateescape``. DynamoDB, the
  SQLite archive and every wire the project speaks store UTF-8, so such text can
  never be written: it is refused before anything is.
* **Nesting.** ``json`` recurses once per level and Python's stack is finite; a
  document is accepted only up to a stated depth, counted without recursion.
* **Endpoint URLs.** What botocore would later refuse with a traceback (a port out
  of range, no host, characters a URL cannot hold) is refused here in one line.

Pure: no I/O. Every refusal is a :class:`ValidationError` (exit code 2 in the CLI).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from bridge.core.errors import ValidationError

# ``surrogateescape`` maps an undecodable byte 0xXY to U+DCXY (0x80..0xFF only).
_ESCAPED_BYTES = range(0xDC80, 0xDD00)

# The JSON escape of a UTF-16 surrogate, the one way JSON text that is itself UTF-8
# can decode to a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# botocore's own rule for a region name (``botocore.utils.validate_region_name``).
_REGION = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?$")
# A host name's labels as botocore accepts them, or an IPv6 literal's characters.
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9._~-]+)?$")


# --------------------------------------------------------------------------- text


def text_problem(text: str) -> str | None:
    """Why UTF-8 cannot carry ``text``, or None when it can.

    A byte that was not UTF-8 (argv, stdin) is named as that byte; any other lone
    surrogate (a JSON ``\\ud800`` escape) as the code point, both with the position.
    """
    if text.isascii():  # the common case, at C speed
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        if code in _ESCAPED_BYTES:
            return f"byte 0x{code - 0xDC00:02x} at position {error.start} is not UTF-8"
        return f"lone surrogate \\u{code:04x} at position {error.start} is not text UTF-8 can carry"
    return None


def check_text(kind: str, text: str) -> str:
    """``text`` itself, or :class:`ValidationError` naming ``kind`` and the fault."""
    problem = text_problem(text)
    if problem is not None:
        raise ValidationError(f"{kind}: {problem}")
    return text


def decode_utf8(kind: str, data: bytes) -> str:
    """Bytes from a file or a pipe as text, strictly: a byte that is not UTF-8 is refused
    (``surrogateescape`` would let it through as a lone surrogate)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValidationError(
            f"{kind}: byte 0x{data[error.start]:02x} at position {error.start} is not UTF-8"
        ) from None


# --------------------------------------------------------------------------- documents


def document_problem(value: Any, max_depth: int, *, text: bool = True) -> str | None:
    """Why a parsed JSON document cannot be carried, or None.

    Depth counts containers: ``{}`` is 1 deep, ``{"a": [1]}`` 2, a scalar 0. With
    ``text`` every key and string value must be text UTF-8 can carry; the fault names
    where it is (``at a.b[2]``). Walked with an explicit stack, so a document of any
    depth is judged without recursion; on the PutEvents path, so paths are built only
    for the fault.
    """
    if isinstance(value, str):
        problem = text_problem(value) if text else None
        return None if problem is None else f"{problem} (at the top)"
    if not isinstance(value, dict | list | tuple):
        return None
    stack: list[tuple[Any, int, _Path]] = [(value, 0, None)]
    while stack:
        node, depth, path = stack.pop()
        depth += 1
        if depth > max_depth:
            return f"nested more than {max_depth} levels deep"
        for key, child in node.items() if isinstance(node, dict) else enumerate(node):
            if text and isinstance(key, str) and (problem := text_problem(key)):
                return f"{problem} (in the key {_where((path, key))!r})"
            if isinstance(child, str):
                if text and (problem := text_problem(child)):
                    return f"{problem} (at {_where((path, key))})"
            elif isinstance(child, dict | list | tuple):
                stack.append((child, depth, (path, key)))
    return None


# Where a value sits, as a chain of (parent, key) links: cheap to extend, spelled out
# (``a.b[2]``) only when a fault is reported.
_Path = tuple[Any, str | int] | None


def _where(path: _Path) -> str:
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(key)
    text = ""
    for key in reversed(keys):
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


def may_hold_surrogates(json_text: str) -> bool:
    """Can this JSON text (itself free of surrogates) decode to a lone surrogate? Only
    through an escape from ``\\ud800`` to ``\\udfff``: False is certain, True a maybe
    (a valid pair, an escaped backslash) for :func:`document_problem` to settle."""
    return _SURROGATE_ESCAPE.search(json_text) is not None


def check_document(kind: str, value: Any, max_depth: int) -> Any:
    """``value`` itself, or :class:`ValidationError` ``"{kind}: {fault}"``."""
    problem = document_problem(value, max_depth)
    if problem is not None:
        raise ValidationError(f"{kind}: {problem}")
    return value


def parse_json(kind: str, text: str, max_depth: int) -> Any:
    """JSON text parsed and checked (:func:`document_problem`); any fault is a
    :class:`ValidationError` that starts with ``kind``, never a ``RecursionError``."""
    check_text(kind, text)  # raw surrogates: named by their position in the text itself
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValidationError(f"{kind} is not valid JSON: {error}") from None
    except RecursionError:  # deeper than the stack allows, so deeper than any limit here
        raise ValidationError(f"{kind}: nested more than {max_depth} levels deep") from None
    # The walk costs a few times the parse, so it runs only when the text could hold a
    # fault: a surrogate (see may_hold_surrogates), or depth, which needs brackets (both
    # tests can be fooled by string content, but only into walking needlessly).
    escapes = may_hold_surrogates(text)
    if escapes or text.count("{") + text.count("[") > max_depth:
        problem = document_problem(value, max_depth, text=escapes)
        if problem is not None:
            raise ValidationError(f"{kind}: {problem}")
    return value


# --------------------------------------------------------------------------- endpoints


def url_problem(url: str) -> str | None:
    """Why ``url`` is no endpoint URL botocore can use, or None."""
    if text_problem(url) is not None or any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        return "it holds characters a URL cannot"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number or out of range
    except ValueError as error:
        return str(error).lower().rstrip(".")
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    host = parts.hostname
    if not host:
        return "it names no host"
    if port == 0:
        return "port 0 is not a port a server listens on"
    if ":" in host:
        if not _IPV6.match(host):
            return f"{host!r} is not an IPv6 address"
    elif len(host) > 253 or not all(
        _HOST_LABEL.match(label) for label in host.removesuffix(".").split(".")
    ):
        return f"{host!r} is not a host name"
    if parts.username is not None or parts.password is not None:
        return "credentials do not belong in the URL"
    if parts.query or parts.fragment:
        return "an endpoint takes no query or fragment"
    return None


def check_url(kind: str, url: str) -> str:
    """``url`` itself, or :class:`ValidationError` in the CLI's long-standing form."""
    problem = url_problem(url)
    if problem is not None:
        raise ValidationError(f"{kind} {url!r} is not a URL like http://127.0.0.1:8000: {problem}")
    return url


def check_region(kind: str, region: str) -> str:
    """A region name botocore accepts (letters, digits and hyphens), else ValidationError."""
    if not _REGION.match(region):
        raise ValidationError(f"{kind} {region!r} is not a region name like us-east-1")
    return region
