"""Load a federation file: YAML -> checked :class:`Federation`, or every problem at once.

Each problem names the file, the field path and what is expected::

    inventories/x.yaml: sites.site-b.storage.origin: 'ftp://x' is not a valid URL: expected ...

YAML syntax errors give the line and column. Duplicate keys (which YAML parsers silently
collapse) are errors, so a site or host written twice is caught. Anchors and aliases (``&x``,
``*x``) are refused where the parser first meets one, before anything is built: an alias can
refer to itself (``a: &x [*x]``) or multiply (ten aliases nested eight deep is 10^8 nodes), and a
federation file is short enough to write out.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from escape_fed.errors import BadInput
from escape_fed.model.schema import Federation

PathT = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a federation file."""

    path: str  # dotted field path, e.g. "sites.site-b.storage.origin"
    message: str  # what is wrong and what is expected
    line: int | None = None

    def render(self, file: str) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{file}: {self.path or '<top>'}: {self.message}{where}"


class FederationFileError(BadInput):
    """A federation file that cannot be used; carries every problem found."""

    def __init__(self, file: str, problems: Sequence[Problem]) -> None:
        self.file = file
        self.problems = list(problems)
        super().__init__("\n".join(p.render(file) for p in self.problems))


def dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _AliasRefused(yaml.MarkedYAMLError):
    """An anchor or alias in a federation file."""


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that records each key's line, refuses duplicate keys and aliases."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML stubs: untyped
        key = f"field {index.value!r}: " if isinstance(index, yaml.ScalarNode) else ""
        if isinstance(event, yaml.AliasEvent):
            raise _AliasRefused(
                problem=f"{key}alias '*{event.anchor}': YAML aliases are not accepted",
                problem_mark=event.start_mark,
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise _AliasRefused(
                problem=f"{key}anchor '&{anchor}': YAML anchors are not accepted",
                problem_mark=event.start_mark,
            )
        node: yaml.Node | None = super().compose_node(parent, index)
        return node


def _load_yaml(text: str, file: str) -> tuple[Any, dict[PathT, int], list[Problem]]:
    loader = _Loader(text)
    lines: dict[PathT, int] = {}
    problems: list[Problem] = []
    try:
        node = loader.get_single_node()
    except _AliasRefused as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise BadInput(
            f"{file}: {where}: {exc.problem}: expected every value written out in full"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise BadInput(f"{file}: {where}: YAML syntax error: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"{file}: YAML syntax error: {exc}") from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]  # PyYAML stubs leave it untyped

    def walk(n: yaml.Node, path: PathT) -> Any:
        if isinstance(n, yaml.MappingNode):
            explicit = {id(k) for k, _ in n.value if k.tag != "tag:yaml.org,2002:merge"}
            loader.flatten_mapping(n)
            out: dict[Any, Any] = {}
            merged: set[Any] = set()  # keys from a '<<' merge: explicit keys override them
            for key_node, value_node in n.value:
                key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
                if not isinstance(key, (str, int, float, bool)):
                    problems.append(
                        Problem(
                            dotted(path), "keys must be plain scalars", key_node.start_mark.line + 1
                        )
                    )
                    continue
                kpath = (*path, str(key))
                if id(key_node) not in explicit:
                    if key in out:
                        continue  # an earlier merge already gave this key
                    merged.add(key)
                elif key in merged:
                    merged.discard(key)
                    del out[key]
                if key in out:
                    problems.append(
                        Problem(
                            dotted(kpath),
                            f"duplicate key {key!r} (first at line {lines[kpath]}): "
                            "each key may appear once",
                            key_node.start_mark.line + 1,
                        )
                    )
                    continue
                lines[kpath] = key_node.start_mark.line + 1
                out[key] = walk(value_node, kpath)
            return out
        if isinstance(n, yaml.SequenceNode):
            items = []
            for i, child in enumerate(n.value):
                lines[(*path, i)] = child.start_mark.line + 1
                items.append(walk(child, (*path, i)))
            return items
        return loader.construct_object(n, deep=True)  # type: ignore[no-untyped-call]

    data = walk(node, ()) if node is not None else None
    return data, lines, problems


def _strip(annotation: Any) -> Any:
    """Peel Annotated and Optional off a type annotation."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _allowed_keys(loc: Sequence[str | int]) -> list[str] | None:
    """The keys the model accepts at ``loc`` (a mapping position), if it is a model."""
    current: Any = Federation
    for part in loc:
        current = _strip(current)
        origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif origin is dict:
            current = typing.get_args(current)[1]
        elif origin is tuple or origin is list:
            current = typing.get_args(current)[0]
        else:
            return None
    current = _strip(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def _message(err: Any) -> str:
    kind = err["type"]
    loc = err["loc"]
    msg: str = err["msg"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f": expected one of {', '.join(allowed)}" if allowed else ""
        return f"unknown key{hint}"
    if msg.startswith("Value error, "):
        return msg.removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return f"{msg} (got {value!r})"
    return f"{msg} (got a {type(value).__name__})"


def _problems_from(exc: ValidationError, lines: dict[PathT, int]) -> list[Problem]:
    out = []
    errors = exc.errors()
    failing = {tuple(e["loc"]) for e in errors}
    for err in errors:
        loc = tuple(p for p in err["loc"] if p != "[key]")
        if err["type"] == "too_short" and any(
            len(other) > len(err["loc"]) and other[: len(err["loc"])] == tuple(err["loc"])
            for other in failing
        ):
            continue  # the list is empty only because its items failed: report those
        key_error = "[key]" in err["loc"]
        msg = _message(err)
        if key_error:
            msg = f"invalid name: {msg}"
        line = None
        for n in range(len(loc), 0, -1):
            line = lines.get(tuple(str(p) if not isinstance(p, int) else p for p in loc[:n]))
            if line:
                break
        out.append(Problem(dotted(loc), msg, line))
    return sorted(set(out), key=lambda p: (p.line or 0, p.path, p.message))


def parse_federation(
    data: Any, file: str = "<federation>", lines: dict[PathT, int] | None = None
) -> Federation:
    """Validate already-parsed data (a dict) into a :class:`Federation`, with every check."""
    from escape_fed.model.checks import check_federation

    lines = lines or {}
    if not isinstance(data, dict):
        raise FederationFileError(
            file, [Problem("", "expected a mapping with keys federation, iam, sites")]
        )
    try:
        fed = Federation.model_validate(data)
    except ValidationError as exc:
        raise FederationFileError(file, _problems_from(exc, lines)) from None
    problems = check_federation(fed)
    if problems:
        placed = [Problem(p.path, p.message, p.line or _line_for(p.path, lines)) for p in problems]
        raise FederationFileError(file, sorted(placed, key=lambda p: (p.line or 0, p.path)))
    return fed


def _line_for(path: str, lines: dict[PathT, int]) -> int | None:
    parts: list[str | int] = []
    for piece in path.replace("[", ".[").split("."):
        if piece.startswith("[") and piece.endswith("]"):
            parts.append(int(piece[1:-1]))
        elif piece:
            parts.append(piece)
    for n in range(len(parts), 0, -1):
        if (line := lines.get(tuple(parts[:n]))) is not None:
            return line
    return None


def load_federation(path: str | Path) -> Federation:
    """Read and check a federation file. Raises :class:`FederationFileError` (exit 2)."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{file}: no such file: expected a federation YAML file") from None
    except IsADirectoryError:
        raise BadInput(f"{file}: is a directory: expected a federation YAML file") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"{file}: not UTF-8 text ({exc.reason}): expected a YAML file") from None
    except OSError as exc:
        raise BadInput(f"{file}: cannot read: {exc.strerror}") from None
    data, lines, problems = _load_yaml(text, file)
    if problems:
        raise FederationFileError(file, problems)
    return parse_federation(data, file, lines)
