"""Job arrays: one spec, many tasks, as `sbatch --array` takes them.

`array: 1-1000` runs the spec 1,000 times; each task sees its index in
`FABBRICA_ARRAY_INDEX`. The forms are Slurm's: single indices and ranges separated by
commas, a range with a step (`0-15:4` is 0, 4, 8, 12). Pure: text in, the indices out, or
a ValueError that says what is wrong.
"""

from __future__ import annotations

import re

MAX_TASKS = 10_000  # tasks of one array
MAX_INDEX = 1_000_000  # the largest index (Slurm's MaxArraySize is 1,001 by default)
INDEX_VARIABLE = "FABBRICA_ARRAY_INDEX"
_ITEM = re.compile(r"^(?P<start>\d{1,7})(?:-(?P<end>\d{1,7})(?::(?P<step>\d{1,7}))?)?$")


def parse_array(text: str | int) -> tuple[int, ...]:
    """The task indices of an array expression, ascending, each once."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError("an array is written as 1-1000, 0-15:4 or 1,3,7")
    value = str(text).replace(" ", "")
    if "%" in value:
        raise ValueError("a limit on running tasks (%N) is not supported; drop it")
    if not value:
        raise ValueError("an array is written as 1-1000, 0-15:4 or 1,3,7")
    found: set[int] = set()
    for item in value.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise ValueError(f"{item!r} is not an index or a range (1-1000, 0-15:4)")
        start = int(match["start"])
        end = int(match["end"]) if match["end"] is not None else start
        step = int(match["step"]) if match["step"] is not None else 1
        if end < start:
            raise ValueError(f"{item!r}: the range ends before it starts")
        if step < 1:
            raise ValueError(f"{item!r}: the step must be at least 1")
        if end > MAX_INDEX:
            raise ValueError(f"{item!r}: indices go up to {MAX_INDEX:,}")
        if (end - start) // step + 1 + len(found) > MAX_TASKS:
            raise ValueError(f"an array has at most {MAX_TASKS:,} tasks")
        found.update(range(start, end + 1, step))
    if len(found) > MAX_TASKS:
        raise ValueError(f"an array has at most {MAX_TASKS:,} tasks")
    return tuple(sorted(found))


def array_text(indices: tuple[int, ...]) -> str:
    """The indices written back compactly (`1-1000`, `0-12:4`, `1,3,7`)."""
    parts: list[str] = []
    i = 0
    while i < len(indices):
        j = i
        if i + 1 < len(indices):
            step = indices[i + 1] - indices[i]
            while j + 1 < len(indices) and indices[j + 1] - indices[j] == step:
                j += 1
            if j - i >= 2 or (j - i == 1 and step == 1):
                suffix = f":{step}" if step != 1 else ""
                parts.append(f"{indices[i]}-{indices[j]}{suffix}")
                i = j + 1
                continue
        parts.append(str(indices[i]))
        i += 1
    return ",".join(parts)
