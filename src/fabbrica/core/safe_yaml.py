"""The one way Fabbrica reads YAML (job specs, catalogs, partition maps): with a cost budget.

YAML anchors and aliases let a few hundred bytes expand into billions of nodes (the
"billion laughs"), and deep nesting makes the loader recurse. So, before any Python object
is built, the event stream is scanned: an anchor or alias, nesting deeper than `max_depth`
or more than `max_nodes` nodes is refused with an error naming the place (the dotted path
of keys, and the line and column). Only then is the text constructed, with the safe loader.

Pure: text in, data or a YamlError out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

MAX_DEPTH = 32
MAX_NODES = 200_000

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(ValueError):
    """Text that is not acceptable YAML; `field` is the dotted path of keys where it went
    wrong (None at the top or when unknown), `line` and `column` count from 1."""

    def __init__(
        self, message: str, field: str | None = None, line: int | None = None, column: int = 0
    ) -> None:
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(f"{where}{message}")
        self.problem = message
        self.field = field
        self.line = line
        self.column = column


@dataclass
class _Frame:
    """A mapping or sequence being scanned: its path, and where in it the scan is."""

    path: list[str]
    mapping: bool
    index: int = 0  # sequence: the next item's index; mapping: keys and values seen
    key: str | None = None


def load_yaml(
    text: str | bytes,
    *,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> Any:
    """The data in `text` (one YAML document; JSON is YAML too), or YamlError."""
    if len(text) > max_bytes:
        raise YamlError(f"{len(text):,} bytes; the limit is {max_bytes:,}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise YamlError(f"not UTF-8 text (byte {exc.start})") from exc
    _scan(text, max_depth, max_nodes)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - the safe loader
    except yaml.YAMLError as exc:
        raise _yaml_error(exc) from exc
    except (ValueError, OverflowError) as exc:  # e.g. an integer of 5,000 digits
        raise YamlError(f"a value cannot be read: {exc}") from exc


def _scan(text: str, max_depth: int, max_nodes: int) -> None:
    """Walk the parser's events (no objects built): refuse anchors, aliases, too deep
    nesting, too many nodes."""
    stack: list[_Frame] = []
    nodes = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.NodeEvent):
                path = _node_path(stack)
                if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
                    message = "anchors and aliases (&name, *name) are not allowed"
                    raise _at(event, f"{message}; write the value out in full", path)
                nodes += 1
                if nodes > max_nodes:
                    raise _at(event, f"more than {max_nodes:,} values", path)
                if isinstance(event, yaml.CollectionStartEvent):
                    if len(stack) >= max_depth:
                        # named by its top-level key: the rest of the path is noise
                        raise _at(event, f"nested deeper than {max_depth} levels", path[:1])
                    _advance(stack, None)
                    stack.append(_Frame(path, isinstance(event, yaml.MappingStartEvent)))
                else:
                    assert isinstance(event, yaml.ScalarEvent)
                    _advance(stack, event.value)
            elif isinstance(event, yaml.CollectionEndEvent):
                stack.pop()
    except yaml.YAMLError as exc:
        raise _yaml_error(exc) from exc


def _at(event: yaml.Event, message: str, path: list[str]) -> YamlError:
    mark = event.start_mark
    if mark is None:
        return YamlError(message, _dotted(path))
    return YamlError(message, _dotted(path), mark.line + 1, mark.column + 1)


def _node_path(stack: list[_Frame]) -> list[str]:
    """The path of the node about to be read."""
    if not stack:
        return []
    top = stack[-1]
    if not top.mapping:
        return [*top.path, str(top.index)]
    if top.index % 2 == 0:  # a key: name the mapping it is in
        return top.path
    return [*top.path, top.key if top.key is not None else "?"]


def _advance(stack: list[_Frame], scalar: str | None) -> None:
    """One node read in the innermost collection (`scalar`: its text, if a scalar)."""
    if not stack:
        return
    top = stack[-1]
    if top.mapping and top.index % 2 == 0:
        top.key = scalar
    top.index += 1


def _dotted(path: list[str]) -> str | None:
    return ".".join(path) or None


def _yaml_error(exc: yaml.YAMLError) -> YamlError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    message = f"not valid YAML: {problem}"
    if mark is None:
        return YamlError(message)
    return YamlError(message, None, mark.line + 1, mark.column + 1)
