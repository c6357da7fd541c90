"""The Lambda code asset: exactly what a handler may import, staged at synth time.

Pointing ``Code.from_asset`` at the repository would upload the virtualenv, the tests
and earlier ``cdk.out`` folders. Instead a fresh directory is filled with:

* ``bridge/__init__.py``, ``bridge/core/**.py`` and ``bridge/lambdas/**.py`` — the
  only parts of this package a handler may import (see DESIGN.md);
* for every handler outside ``bridge``, its top-level package (or single module)
  from the project root, without caches, virtualenvs, tests or build output.

boto3 is not copied: the Lambda Python runtime provides it. Only ``*.py`` files
are taken from ``bridge`` so the asset hash changes only when code does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bridge.core.errors import BridgeError
from bridge.core.subscriptions import FunctionSpec, Subscriptions
from bridge.subscriptions import BRIDGE_PACKAGE, find_handler, handler_problem, project_root

__all__ = ["BRIDGE_PARTS", "stage_code"]

#: The parts of the ``bridge`` package that go to Lambda.
BRIDGE_PARTS = ("core", "lambdas")
# Never part of a user's handler package, whatever it contains.
_SKIPPED_DIRS = frozenset(
    {
        "__pycache__",
        ".venv",
        "venv",
        ".git",
        "node_modules",
        "cdk.out",
        "tests",
        "test",
        ".pytest_cache",
        ".ruff_cache",
        ".mypy_cache",
    }
)
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def stage_code(subs: Subscriptions, dest: Path, extra_handlers: tuple[str, ...] = ()) -> Path:
    """Fill ``dest`` (which must not exist) with the code every function needs.

    ``extra_handlers`` are infrastructure handlers (the publisher, the bridge's
    functions) that are not in the definition but must be in the asset; they must
    live in ``bridge.lambdas`` and exist there, or the stack would deploy functions
    that fail at their first import.
    """
    for handler in extra_handlers:
        if not handler.startswith("bridge.lambdas."):
            raise BridgeError(f"infrastructure handler {handler!r} must be in bridge.lambdas")
        spec = FunctionSpec(name=handler, handler=handler, pattern=None)
        problem = handler_problem(spec, BRIDGE_PACKAGE.parent)
        if problem is not None:
            raise BridgeError(f"infrastructure handler {handler}: {problem}")
    dest.mkdir(parents=True)
    package = dest / "bridge"
    package.mkdir()
    shutil.copyfile(BRIDGE_PACKAGE / "__init__.py", package / "__init__.py")
    for part in BRIDGE_PARTS:
        _copy_python(BRIDGE_PACKAGE / part, package / part)
    root = project_root(subs)
    for spec in subs.functions.values():
        _stage_handler(spec, root, dest)
    return dest


def _stage_handler(spec: FunctionSpec, root: Path, dest: Path) -> None:
    where = f"{spec.name} (handler {spec.handler})"
    location = find_handler(spec, root)
    if location is None:
        raise BridgeError(f"{where}: module {spec.module!r} not found below {root}")
    if location.in_bridge:
        if spec.module.split(".")[1] not in BRIDGE_PARTS:
            raise BridgeError(
                f"{where}: only bridge.lambdas and bridge.core are packaged for Lambda"
            )
        return
    top = location.top_level
    if not top.is_relative_to(root.resolve()):
        raise BridgeError(
            f"{where}: module found at {top}, outside the project root {root}; "
            "Lambda gets only the project's own code (plus boto3), so move it into the project"
        )
    target = dest / top.name
    if target.exists():
        return  # another handler of the same package already brought it
    if top.is_dir():
        _copy_tree(top, target)
    else:
        shutil.copyfile(top, target)


def _copy_python(source: Path, target: Path) -> None:
    """Copy the ``*.py`` files below ``source``, keeping their relative paths."""
    for file in sorted(source.rglob("*.py")):
        relative = file.relative_to(source)
        if _SKIPPED_DIRS.intersection(relative.parts[:-1]):
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target / relative)


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a user's package: every file except caches, virtualenvs, tests and builds."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        return {
            name
            for name in names
            if name in _SKIPPED_DIRS
            or name.endswith(_SKIPPED_SUFFIXES)
            or (name.startswith(".") and (Path(directory) / name).is_dir())
        }

    shutil.copytree(source, target, ignore=ignore)
