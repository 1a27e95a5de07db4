"""Data sets, the pure part: residency, classes, references from job specs, file paths in
a data set, and the Croissant 1.1 JSON-LD of a version. No I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from fabbrica.core.countries import country_code
from fabbrica.core.errors import InvalidInput

EU = "EU"
# The 27 member states, with both of Greece's codes (the EU's EL, ISO's GR). "EU" is kept
# too: the embedded default's `local` factory gives its country as EU.
EU_MEMBER_STATES = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "EL",
        "ES",
        "FI",
        "FR",
        "GR",
        "HR",
        "HU",
        "IE",
        "IT",
        "LT",
        "LU",
        "LV",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
    ]
)
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_NAME = re.compile(NAME_PATTERN)
_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_.-]{0,62})(?:@(?P<version>[1-9][0-9]{0,8}))?$")
MAX_FILES = 100_000


class DataClass(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    PERSONAL = "personal"  # personal data (GDPR): must name a residency


def check_name(name: str, field: str = "name") -> str:
    if not _NAME.match(name):
        raise InvalidInput(
            "a data set's name is 1 to 63 lower-case letters, digits, '.', '_' and '-', "
            "starting with a letter or digit",
            field=field,
        )
    return name


def parse_residency(value: str | Sequence[str] | None, field: str = "residency") -> str | None:
    """The residency as stored: None (anywhere), "EU", or sorted country codes joined by
    commas ("FR,IT"). InvalidInput naming `field` for anything else."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    codes = [i.strip().upper() for i in items if i.strip()]
    if not codes:
        return None
    if EU in codes:
        if len(codes) > 1:
            raise InvalidInput("give either EU or a list of country codes, not both", field)
        return EU
    return ",".join(sorted({country_code(c, field) for c in codes}))


def residency_countries(residency: str | None) -> frozenset[str] | None:
    """The countries a data set may be placed in (None: anywhere)."""
    if residency is None:
        return None
    if residency == EU:
        return EU_MEMBER_STATES | {EU}
    codes = set(residency.split(","))
    # Greece has two codes; the catalog writes the EU's (EL)
    if codes & {"EL", "GR"}:
        codes |= {"EL", "GR"}
    return frozenset(codes)


def check_class(data_class: str, residency: str | None) -> DataClass:
    try:
        found = DataClass(data_class)
    except ValueError as exc:
        raise InvalidInput("the class is public, internal or personal", "class") from exc
    if found is DataClass.PERSONAL and residency is None:
        raise InvalidInput(
            "a data set of class personal must name a residency (--residency IT,FR or EU)",
            "residency",
        )
    return found


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """`name` or `name@3` in a job spec: None is the latest version at submission."""

    name: str
    version: int | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"


def parse_ref(text: str) -> DatasetRef:
    match = _REF.match(text.strip())
    if match is None:
        raise ValueError(f"{text[:80]!r} is not a data set (name or name@version)")
    version = match.group("version")
    return DatasetRef(match.group("name"), int(version) if version else None)


def check_file_path(path: str) -> str:
    """A file's path inside a data set: relative, `/`-separated, no `..`, no empty parts."""
    parts = PurePosixPath(path).parts
    bad = (
        not path
        or path.startswith("/")
        or "\x00" in path
        or len(path) > 1024
        or any(p in ("..", ".") for p in parts)
        or path != "/".join(parts)
    )
    if bad:
        raise InvalidInput(f"{path[:80]!r} is not a relative path inside the data set", "data")
    return path


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class VersionFacts:
    """What the Croissant document of a version says."""

    dataset_id: int
    name: str
    description: str
    license: str | None
    version: int
    created: str  # ISO 8601
    residency: str | None
    data_class: str
    files: tuple[FileEntry, ...]
    url: str  # where the data set is, on this server


CROISSANT_CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
CROISSANT_SPEC = "http://mlcommons.org/croissant/1.1"


def croissant(facts: VersionFacts) -> dict[str, Any]:
    """The Croissant 1.1 JSON-LD of one version: the data set's metadata and one
    `cr:FileObject` per file (sha256, contentSize in bytes)."""
    doc: dict[str, Any] = {
        "@context": CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "@id": f"{facts.url}/croissant.json?version={facts.version}",
        "conformsTo": CROISSANT_SPEC,
        "name": facts.name,
        "description": facts.description or f"The data set {facts.name}.",
        "version": f"{facts.version}.0.0",
        "datePublished": facts.created,
        "url": facts.url,
        "distribution": [_file_object(facts, f) for f in facts.files],
    }
    if facts.license:
        doc["license"] = facts.license
    keywords = [f"class:{facts.data_class}"]
    if facts.residency:
        keywords.append(f"residency:{facts.residency}")
    doc["keywords"] = keywords
    return doc


def _file_object(facts: VersionFacts, entry: FileEntry) -> dict[str, Any]:
    return {
        "@type": "cr:FileObject",
        "@id": entry.path,
        "name": entry.path,
        "contentUrl": f"{facts.url}/versions/{facts.version}/file?path={quote(entry.path)}",
        "contentSize": f"{entry.size} B",
        "encodingFormat": _format(entry.path),
        "sha256": entry.sha256,
    }


_FORMATS = {
    ".csv": "text/csv",
    ".json": "application/json",
    ".jsonl": "application/jsonlines",
    ".parquet": "application/x-parquet",
    ".txt": "text/plain",
    ".npy": "application/x-npy",
    ".zip": "application/zip",
    ".tar": "application/x-tar",
    ".gz": "application/gzip",
    ".png": "image/png",
    ".jpg": "image/jpeg",
}


def _format(path: str) -> str:
    return _FORMATS.get(PurePosixPath(path).suffix.lower(), "application/octet-stream")


def total_size(files: Iterable[FileEntry]) -> int:
    return sum(f.size for f in files)
