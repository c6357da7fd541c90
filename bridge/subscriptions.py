"""Loading the subscriptions definition from disk, and finding its handler modules.

:mod:`bridge.core.subscriptions` parses the text; this module decides which file to
read and checks that every handler can be found *before* anything is deployed or
started, so a typo fails with ``FILE:LINE`` instead of an ImportError in a Lambda
log an hour later.

Handlers are found without importing them (importing would run user code, and
needs the user's dependencies): each dotted part is looked up with
:class:`importlib.machinery.PathFinder` below its parent's directories, starting at
the project root (the definition file's directory) and then ``sys.path``. The
module's source is then read with :mod:`ast` to check that it binds the function
name at top level. The ``bridge`` package itself is looked up where it is
installed, since an editable install is found by a meta-path hook, not a path.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import bridge
from bridge.core.errors import BridgeError, ValidationError
from bridge.core.subscriptions import (
    FunctionSpec,
    Subscriptions,
    SubscriptionsError,
    error_at,
    parse,
)

__all__ = [
    "DEFAULT_FILE_NAME",
    "PACKAGED_DEFAULT",
    "HandlerLocation",
    "default_path",
    "find_handler",
    "load",
    "project_root",
]

DEFAULT_FILE_NAME = "dynamodb-logs.toml"
#: The definition shipped with the package (the project's own users/failures handlers).
PACKAGED_DEFAULT = Path(__file__).resolve().with_name(DEFAULT_FILE_NAME)
#: Where the ``bridge`` package lives; its parent is the root of the packaged default.
BRIDGE_PACKAGE = Path(bridge.__file__).resolve().parent


@dataclass(frozen=True)
class HandlerLocation:
    """Where a handler's module was found on disk."""

    origin: Path | None  # the module's file (a package's __init__.py); None for a namespace
    top_level: Path  # the top-level package directory (or single-file module) it belongs to
    in_bridge: bool  # part of this package rather than the user's project


def default_path(cwd: Path | None = None) -> Path:
    """``./dynamodb-logs.toml`` if there is one, else the packaged default."""
    candidate = (cwd or Path.cwd()) / DEFAULT_FILE_NAME
    return candidate if candidate.is_file() else PACKAGED_DEFAULT


def project_root(subs: Subscriptions) -> Path:
    """The directory handler modules are looked up from.

    For the packaged default that is the directory holding the ``bridge`` package;
    for a user's file it is the file's own directory.
    """
    source = Path(subs.source).resolve()
    if source == PACKAGED_DEFAULT:
        return BRIDGE_PACKAGE.parent
    return source.parent


def load(path: str | Path | None = None) -> Subscriptions:
    """Read, validate and check a definition; every error is one ``FILE:LINE`` line."""
    file = Path(path) if path is not None else default_path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationError(f"{file}: no such subscriptions file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BridgeError(f"{file}: cannot read the subscriptions file: {error}") from None
    subs = parse(text, source=str(file))
    root = project_root(subs)
    for spec in subs.functions.values():
        _check_handler(subs, spec, root, text)
    return subs


def find_handler(spec: FunctionSpec, root: Path) -> HandlerLocation | None:
    """Locate ``spec.module`` below ``root`` (then ``sys.path``) without importing it."""
    parts = spec.module.split(".")
    top = parts[0]
    if top == "bridge":
        spec_found = importlib.machinery.PathFinder.find_spec(top, [str(BRIDGE_PACKAGE.parent)])
    else:
        search = [str(root), *(entry for entry in sys.path if entry)]
        spec_found = importlib.machinery.PathFinder.find_spec(top, search)
        if spec_found is None:  # installed through a meta-path hook (e.g. editable)
            spec_found = importlib.util.find_spec(top)
    if spec_found is None:
        return None
    top_level = _top_level_path(spec_found)
    if top_level is None:
        return None
    for depth in range(1, len(parts)):
        locations = spec_found.submodule_search_locations
        if not locations:
            return None  # a plain module has no submodules
        name = ".".join(parts[: depth + 1])
        spec_found = importlib.machinery.PathFinder.find_spec(name, list(locations))
        if spec_found is None:
            return None
    origin = Path(spec_found.origin) if spec_found.has_location and spec_found.origin else None
    return HandlerLocation(origin=origin, top_level=top_level, in_bridge=top == "bridge")


def _top_level_path(found: importlib.machinery.ModuleSpec) -> Path | None:
    if found.submodule_search_locations:
        return Path(next(iter(found.submodule_search_locations))).resolve()
    if found.has_location and found.origin:
        return Path(found.origin).resolve()
    return None


def _check_handler(subs: Subscriptions, spec: FunctionSpec, root: Path, text: str) -> None:
    problem = handler_problem(spec, root)
    if problem is not None:
        raise _handler_error(subs, spec, text, problem)


def handler_problem(spec: FunctionSpec, root: Path) -> str | None:
    """Why ``spec.handler`` can't be found below ``root`` (without importing it), or None."""
    location = find_handler(spec, root)
    if location is None:
        return f"module {spec.module!r} not found (looked in {root} and sys.path)"
    if location.origin is None or location.origin.suffix != ".py":
        return None  # a namespace package or compiled module: nothing to read
    try:
        tree = ast.parse(location.origin.read_bytes(), filename=str(location.origin))
    except (OSError, SyntaxError, ValueError) as error:
        return f"cannot read {location.origin}: {error}"
    names = _top_level_names(tree)
    if names is not None and spec.function not in names:
        return f"{location.origin} defines no {spec.function!r} at top level"
    return None


def _top_level_names(tree: ast.Module) -> set[str] | None:
    """Names a module binds at top level; None when a star import makes it unknowable.

    Branches of top-level ``if``/``try``/``with`` count: a name bound in any branch
    may exist at import time, and a false alarm would block a valid deployment.
    """
    names: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.If | ast.With):
            pending.extend([*node.body, *getattr(node, "orelse", [])])
        elif isinstance(node, ast.Try):
            pending.extend([*node.body, *node.orelse, *node.finalbody])
            for handler in node.handlers:
                pending.extend(handler.body)
    return names


def _handler_error(
    subs: Subscriptions, spec: FunctionSpec, text: str, reason: str
) -> SubscriptionsError:
    """A handler problem, reported at the line of that function's ``handler`` key."""
    return error_at(text, subs.source, ("functions", spec.name, "handler"), reason)
