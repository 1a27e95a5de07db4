"""Load and validate a catalog file; errors name the file, the entry and the field."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fabbrica.catalog.model import Catalog
from fabbrica.core.safe_yaml import YamlError, load_yaml

MAX_CATALOG_BYTES = 5 * 1024 * 1024


class CatalogError(ValueError):
    """A catalog file that cannot be used. The message says where and why."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid catalog {path}:\n{lines}")


def default_catalog_path() -> Path:
    """The catalog shipped with Fabbrica: the 19 EuroHPC AI Factories."""
    return Path(str(resources.files("fabbrica.catalog") / "data" / "eurohpc.yaml"))


def load_catalog(path: Path | str | None = None) -> Catalog:
    """Read, parse and validate a catalog file (the shipped one when `path` is None)."""
    file = Path(path) if path is not None else default_catalog_path()
    name = str(file)
    try:
        size = file.stat().st_size
        if size > MAX_CATALOG_BYTES:
            raise CatalogError(name, [f"file is {size} bytes, the limit is {MAX_CATALOG_BYTES}"])
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError(name, [f"not UTF-8 text: {exc.reason} at byte {exc.start}"]) from exc
    except OSError as exc:
        raise CatalogError(name, [f"cannot read: {exc.strerror or exc}"]) from exc
    return parse_catalog(text, name)


def parse_catalog(text: str, name: str = "<catalog>") -> Catalog:
    try:
        data = load_yaml(text, max_bytes=MAX_CATALOG_BYTES)
    except YamlError as exc:
        where = f" ({exc.field})" if exc.field else ""
        raise CatalogError(name, [f"{exc}{where}"]) from exc
    if not isinstance(data, dict):
        raise CatalogError(name, ["the file must hold a mapping (schema_version, factories ...)"])
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(name, [_describe(err, data) for err in exc.errors()]) from exc


def _describe(err: Any, data: Any) -> str:
    """One validation error as `entry factories[2] (id=it4lia) > systems[0], field 'nodes': ...`."""
    loc = [part for part in err["loc"] if not _is_union_tag(part)]
    field = str(loc[-1]) if loc and isinstance(loc[-1], str) else None
    entry_parts: list[str] = []
    node = data
    path = loc[:-1] if field is not None else loc
    for part in path:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            ident = node.get("id") if isinstance(node, dict) else None
            label = f"[{part}]" + (f" (id={ident})" if ident is not None else "")
            if entry_parts:
                entry_parts[-1] += label
            else:
                entry_parts.append(label)
        else:
            node = node.get(part) if isinstance(node, dict) else None
            entry_parts.append(str(part))
    entry = " > ".join(entry_parts) or "top level"
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    if field is None:
        return f"entry {entry}: {message}"
    return f"entry {entry}, field '{field}': {message}"


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and part in {"per_gpu", "whole_node", "max_resource"}
