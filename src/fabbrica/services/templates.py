"""Job templates: those shipped in the package (`fabbrica/templates/<name>/`) and those an
operator adds from a folder (setting `templates_dir`, same layout; a name there replaces a
shipped one). Each is rendered by the core (`core.templates`) and its folder, less
`template.yaml`, with the `_shared/<name>/` folders it names, is the job's workdir."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fabbrica.core.errors import InvalidInput, NotFound
from fabbrica.core.templates import Rendered, Template, TemplateError, parse_template, render

SHIPPED = Path(__file__).resolve().parent.parent / "templates"
TEMPLATE_FILE = "template.yaml"
SHARED = "_shared"
_LEFT_OUT = ("__pycache__", ".venv", ".git")


@dataclass(frozen=True, slots=True)
class Found:
    template: Template
    folder: Path
    shared: tuple[Path, ...] = ()  # the `_shared/<name>/` folders it draws files from


class Templates:
    """The templates of `folders`, later folders' names replacing earlier ones'."""

    def __init__(self, extra: Path | None = None) -> None:
        self.folders = (SHIPPED, *((extra,) if extra is not None else ()))

    def listed(self) -> list[Found]:
        found: dict[str, Found] = {}
        for folder in self.folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob(f"*/{TEMPLATE_FILE}")):
                template = _load(path)
                shared = tuple(_shared(folder, template, name) for name in template.shared)
                found[template.name] = Found(template, path.parent, shared)
        return [found[name] for name in sorted(found)]

    def named(self, name: str) -> Found:
        for each in self.listed():
            if each.template.name == name:
                return each
        known = ", ".join(f.template.name for f in self.listed())
        raise NotFound(f"no template {name!r} (known: {known})", field="template")

    def render_job(
        self,
        name: str,
        parameters: dict[str, Any],
        *,
        project: str | None = None,
        datasets: tuple[str, ...] = (),
    ) -> tuple[Rendered, Found]:
        """The job spec; InvalidInput naming the parameter (`parameters.<name>`)."""
        found = self.named(name)
        try:
            rendered = render(found.template, parameters, project=project, datasets=datasets)
        except TemplateError as exc:
            raise InvalidInput(exc.message, field=exc.field) from exc
        return rendered, found


def _load(path: Path) -> Template:
    """A template file; one that does not parse is an operator's mistake, said at once."""
    template = parse_template(path.read_bytes(), source=str(path))
    if template.name != path.parent.name:
        raise TemplateError("name", f"{path}: the name {template.name!r} is not its folder's")
    return template


def _shared(root: Path, template: Template, name: str) -> Path:
    """A shared folder: the template's own templates folder's, else the shipped one's."""
    for base in (root, SHIPPED):
        if (base / SHARED / name).is_dir():
            return base / SHARED / name
    raise TemplateError("shared", f"{template.name}: no shared folder {SHARED}/{name}")


def workdir_archive(found: Found) -> bytes:
    """The template's files (all but template.yaml) and its shared folders' files, as a
    gzipped tar: the job's workdir. A file of the template's own wins over a shared one."""
    files: dict[str, Path] = {}
    for folder in (*found.shared, found.folder):
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.name == TEMPLATE_FILE:
                continue
            relative = path.relative_to(folder)
            if any(part in _LEFT_OUT for part in relative.parts):
                continue
            files[str(relative)] = path
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in sorted(files):
            tar.add(files[name], arcname=name, recursive=False)
    return buffer.getvalue()
