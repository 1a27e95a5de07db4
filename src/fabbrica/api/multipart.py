"""A multipart form read from bytes already in memory, synchronously: so that a worker
thread, not the event loop, spends the time a 100 MiB upload takes to split.

(The request guards have read the whole body already, within its size limit.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from fabbrica.core.errors import InvalidInput

MAX_PARTS = 16  # a submission has three


@dataclass
class Part:
    name: str
    filename: str | None
    data: bytearray = field(default_factory=bytearray)


def parse_form(content_type: str, body: bytes) -> dict[str, Part]:
    """The form's parts by name (the first of each name), or InvalidInput."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidInput("a multipart form needs its boundary in the Content-Type")
    parts: list[Part] = []
    headers: dict[bytes, bytes] = {}
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        headers.clear()
        if len(parts) >= MAX_PARTS:
            raise InvalidInput(f"a submission has at most {MAX_PARTS} form fields")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        parts.append(Part(name, filename.decode("utf-8", "replace") if filename else None))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except ValueError as exc:  # python-multipart's own errors
        raise InvalidInput(f"the multipart form cannot be read: {exc}") from exc
    found: dict[str, Part] = {}
    for part in parts:
        found.setdefault(part.name, part)
    return found
