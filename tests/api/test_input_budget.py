"""Untrusted input has a cost budget (issue 10, findings 1, 3, 4, 5 and the archive part of
9): aliases, JSON depth, integer parameters, NUL bytes, workdir archives (entries, size,
ratio, file types) and the archives the server builds; nothing of a refused upload stays.
Real app, real database (both), real local executor."""

from __future__ import annotations

import gzip
import io
import json
import statistics
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fabbrica.api.deps import AppContext
from fabbrica.core.archives import ArchiveLimits
from fabbrica.services import job_files
from tests.api import test_jobs_api
from tests.api.helpers import API, assert_error, snapshot
from tests.api.test_jobs_api import World, spec, submit
from tests.unit.test_safe_yaml import alias_bomb

world = test_jobs_api.world  # the fixture: a tenant with 10 GPU-hours on a 4-GPU local factory
Member = tuple[tarfile.TarInfo, bytes | None]


def member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def archive(*members: Member) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def zeros_archive(size: int) -> bytes:
    """One file of `size` zero bytes, gzipped: packs about 1000 to 1."""
    info = tarfile.TarInfo("zeros.bin")
    info.size = size
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as out:
        out.write(info.tobuf())
        chunk = bytes(1024 * 1024)
        for _ in range(size // len(chunk)):
            out.write(chunk)
        out.write(bytes(size % len(chunk) + 1024 * 2))  # padding and end blocks
    return raw.getvalue()


def many_entries(count: int) -> bytes:
    """`count` empty files (built from one header: quick), gzipped."""
    headers = []
    for i in range(count):
        info = tarfile.TarInfo(f"f{i}")
        headers.append(info.tobuf())
    return gzip.compress(b"".join(headers) + bytes(1024), compresslevel=1)


def ctx_of(w: World) -> AppContext:
    app: Any = w.api.app
    ctx: AppContext = app.state.ctx
    return ctx


def upload(w: World, data: bytes, text: str = "name: w\nrun: ls\n") -> Any:
    return w.api.post(
        f"{API}/jobs",
        headers=w.pi,
        data={"spec": text, "project": w.project},
        files={"workdir": ("w.tar.gz", data, "application/gzip")},
    )


def files_on_disk(root: Path) -> list[Path]:
    folder = root / "uploads"
    return sorted(p for p in folder.rglob("*") if not p.is_dir()) if folder.exists() else []


@pytest.fixture
def files(world: World) -> Iterator[Path]:
    path = ctx_of(world).files
    assert path is not None
    yield path


# --- workdir archives: refused at submission, 4xx naming `workdir`, nothing on disk ---


def test_a_bomb_unpacking_to_1000x_beyond_the_size_limit_is_refused_and_leaves_nothing(
    world: World, files: Path
) -> None:
    ctx_of(world).archive_limits = ArchiveLimits(max_unpacked_bytes=4 * 1024**2, max_ratio=1e6)
    data = zeros_archive(64 * 1024**2)  # 64 MiB of zeros, 16x the limit, ~64 KiB packed
    assert len(data) * 100 < 64 * 1024**2
    before = snapshot(world.db)
    began = time.perf_counter()
    r = upload(world, data)
    elapsed = time.perf_counter() - began
    assert_error(r, 413, "too_large", "workdir")
    assert "4,194,304 bytes" in r.json()["error"]["message"]
    assert elapsed < 2, elapsed  # stopped at the limit, never inflated to 64 MiB
    assert snapshot(world.db) == before
    assert files_on_disk(files) == []


def test_an_archive_over_100x_its_packed_size_is_refused(world: World, files: Path) -> None:
    data = zeros_archive(16 * 1024**2)  # within the 1 GiB default, but ~1000:1
    r = upload(world, data)
    assert_error(r, 413, "too_large", "workdir")
    assert "100 times its packed size" in r.json()["error"]["message"]
    assert files_on_disk(files) == []


def test_an_archive_of_100000_entries_is_refused(world: World, files: Path) -> None:
    before = snapshot(world.db)
    r = upload(world, many_entries(100_000))
    assert_error(r, 413, "too_large", "workdir")
    assert "more than 10,000 entries" in r.json()["error"]["message"]
    assert snapshot(world.db) == before
    assert files_on_disk(files) == []


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (member("pipe", kind=tarfile.FIFOTYPE), "a FIFO"),
        (member("null", kind=tarfile.CHRTYPE), "a character device"),
        (member("disk", kind=tarfile.BLKTYPE), "a block device"),
        (member("abs", kind=tarfile.SYMTYPE, link="/etc/passwd"), "leaves the workdir"),
        (member("d/up", kind=tarfile.SYMTYPE, link="../../x"), "leaves the workdir"),
        (member("hard", kind=tarfile.LNKTYPE, link="/etc/shadow"), "hard link"),
        (member("../out.txt"), "leaves the workdir"),
    ],
    ids=["fifo", "char-device", "block-device", "absolute-link", "escaping-link", "hardlink",
         "dotdot"],
)  # fmt: skip
def test_archives_with_anything_but_files_dirs_and_inner_links_are_refused(
    world: World, files: Path, bad: Member, words: str
) -> None:
    before = snapshot(world.db)
    r = upload(world, archive(member("main.py"), bad))
    assert_error(r, 422, "invalid", "workdir")
    assert words in r.json()["error"]["message"]
    assert snapshot(world.db) == before
    assert files_on_disk(files) == []


def test_relative_links_inside_the_tree_are_taken_and_the_job_runs(
    world: World, files: Path
) -> None:
    data = archive(
        member("d/", kind=tarfile.DIRTYPE),
        member("d/a.txt", b"hello\n"),
        member("link.txt", kind=tarfile.SYMTYPE, link="d/a.txt"),
        member("d/up.txt", kind=tarfile.SYMTYPE, link="../link.txt"),
        member("same.txt", kind=tarfile.LNKTYPE, link="d/a.txt"),
    )
    r = upload(world, data, "name: w\nrun: cat d/up.txt same.txt\n")
    assert r.status_code == 201, r.text
    assert len(files_on_disk(files)) == 1
    assert world.run_loop_until(r.json()["id"])["state"] == "succeeded"
    logs = world.api.get(f"{API}/jobs/{r.json()['id']}/logs", headers=world.pi)
    assert logs.text == "hello\nhello\n"


def test_a_refused_submission_deletes_its_upload(world: World, files: Path) -> None:
    """Finding 4: the archive is fine, the job is not (12 GPU-hours > the 10 granted)."""
    before = snapshot(world.db)
    text = "name: w\nrun: ls\nresources: {gpus: 4, time_limit: 3h}\n"
    r = upload(world, archive(member("main.py")), text)
    assert_error(r, 422, "invalid", "resources")
    r = upload(world, archive(member("main.py")), "name: w\nrun: ls\nplacement: {factories: [x]}")
    assert_error(r, 422, "invalid", "placement.factories")
    assert snapshot(world.db) == before
    assert files_on_disk(files) == []


def test_uploads_no_job_refers_to_are_swept(world: World, files: Path) -> None:
    kept = upload(world, archive(member("main.py")))
    assert kept.status_code == 201, kept.text
    stored = files_on_disk(files)
    assert len(stored) == 1
    partial = files / "uploads" / ".partial" / "crashed.tar"
    partial.parent.mkdir(exist_ok=True)
    partial.write_bytes(b"half an upl")
    orphan = files / "uploads" / "0123abcd.tar"  # written, but its commit never happened
    orphan.write_bytes(archive(member("x")))
    with world.db.session() as session:
        removed = job_files.sweep_uploads(session, files)
    assert sorted(removed) == sorted([partial, orphan])
    assert files_on_disk(files) == stored


# --- the spec: aliases, depth, NUL, via JSON and multipart ---


def test_a_ten_level_alias_bomb_is_a_quick_422(world: World) -> None:
    body = {"spec": alias_bomb(10), "project": world.project}
    times = []
    for _ in range(5):
        began = time.perf_counter()
        r = world.api.post(f"{API}/jobs", headers=world.pi, json=body)
        times.append(time.perf_counter() - began)
        assert_error(r, 422, "invalid", "spec.env.a0")
        assert "anchors and aliases" in r.json()["error"]["message"]
    assert statistics.median(times) < 0.1, times
    r = world.api.post(f"{API}/jobs", headers=world.pi, files={"spec": (None, alias_bomb(10))})
    assert_error(r, 422, "invalid", "spec.env.a0")
    r = world.api.post(f"{API}/jobs", headers=world.pi, data={"spec": alias_bomb(10)})
    assert_error(r, 422, "invalid", "spec.env.a0")  # an urlencoded form too


def nested(depth: int) -> Any:
    node: Any = "x"
    for _ in range(depth - 1):
        node = [node]
    return node


@pytest.mark.parametrize("path", ["/jobs", "/projects", "/organisations"])
def test_json_bodies_deeper_than_32_levels_are_422_before_parsing(world: World, path: str) -> None:
    before = snapshot(world.db)
    body = json.dumps({"spec": {"name": "t", "run": "x", "env": nested(40)}})
    r = world.api.post(f"{API}{path}", headers={**world.pi, "Content-Type": "application/json"},
                       content=body)  # fmt: skip
    assert_error(r, 422, "invalid", None)
    assert "nested deeper than 32 levels" in r.json()["error"]["message"]
    deep = world.api.post(f"{API}{path}", headers=world.pi, content=b"[" * 500_000)
    assert_error(deep, 422, "invalid", None)
    assert snapshot(world.db) == before
    # 32 levels pass the guard: the route's own validation answers
    ok = world.api.post(f"{API}/jobs", headers=world.pi, json={"spec": {"env": nested(31)}})
    assert "nested deeper" not in ok.json()["error"]["message"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"name": "t", "run": "x", "env": {"A": "x\\u0000y"}}', "spec.env.A"),  # JSON text
        ('name: t\nrun: x\nenv: {A: "x\\0y"}\n', "spec.env.A"),  # a YAML escape
        ('name: t\nrun: "echo \\0"\n', "spec.run"),
        ('name: t\nrun: x\nworkdir: "a\\x1bb"\n', "spec.workdir"),
        ('name: t\nrun: x\noutputs: ["o\\u202eb"]\n', "spec.outputs.0"),
        ('name: t\nrun: x\nresources: {gpu_model: "h\\0"}\n', "spec.resources.gpu_model"),
    ],
    ids=["json-env", "yaml-env", "run", "workdir-escape", "output-bidi", "gpu-model"],
)
def test_nul_and_control_characters_in_a_spec_are_422_naming_the_field(
    world: World, text: str, field: str
) -> None:
    """Finding 5: multipart skips the body's NUL guard, so the spec itself must refuse."""
    before = snapshot(world.db)
    form = {"spec": (None, text), "project": (None, world.project)}
    r = world.api.post(f"{API}/jobs", headers=world.pi, files=form)
    assert_error(r, 422, "invalid", field)
    as_json = world.api.post(
        f"{API}/jobs", headers=world.pi, json={"spec": text, "project": world.project}
    )
    assert_error(as_json, 422, "invalid", field)
    assert snapshot(world.db) == before


def test_a_project_id_with_a_nul_in_a_form_is_422(world: World) -> None:
    form = {"spec": (None, "name: t\nrun: x\n"), "project": (None, "FAB\x00x")}
    r = world.api.post(f"{API}/jobs", headers=world.pi, files=form)
    assert_error(r, 422, "invalid", "project")
    as_file = {"spec": ("job.yaml", "name: t\nrun: 'true'\n"), "project": (None, world.project)}
    assert world.api.post(f"{API}/jobs", headers=world.pi, files=as_file).status_code == 201


# --- integer parameters: bounded, 422 in the error shape, never 500 ---


@pytest.mark.parametrize("offset", ["99999999999999999999", "17592186044417", str(2**63 - 1)])
def test_log_offsets_out_of_range_are_422(world: World, offset: str) -> None:
    """Finding 3: these were 500 text/plain."""
    job = submit(world, spec("echo hi")).json()
    world.run_loop_until(job["id"])
    r = world.api.get(f"{API}/jobs/{job['id']}/logs", headers=world.pi, params={"offset": offset})
    assert_error(r, 422, "invalid", "offset")
    far = world.api.get(f"{API}/jobs/{job['id']}/logs", headers=world.pi,
                        params={"offset": 2**40})  # fmt: skip
    assert far.status_code == 200 and far.content == b""
    assert far.headers["X-Next-Offset"] == str(2**40)


def integer_parameters(app: Any) -> list[tuple[str, str, str, dict[str, Any]]]:
    found = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            for param in operation.get("parameters", []):
                schema = param["schema"]
                kinds = [schema, *schema.get("anyOf", [])]
                if any(k.get("type") == "integer" for k in kinds):
                    found.append((method.upper(), path, param["name"], operation))
    return found


def test_every_integer_parameter_is_bounded_and_too_big_is_a_422(world: World) -> None:
    params = integer_parameters(world.api.app)
    assert len(params) >= 10  # the walk finds them: job, user, token, proposal ids ...
    for method, path, name, operation in params:
        url = path
        query = {}
        for other in operation.get("parameters", []):
            value = "99999999999999999999" if other["name"] == name else "1"
            if other["in"] == "path":
                url = url.replace("{" + other["name"] + "}", value)
            elif other["name"] == name or other.get("required"):
                query[other["name"]] = value  # the others required: present, maybe wrong
        r = world.api.request(method, url, headers=world.admin, params=query)
        assert r.status_code == 422, (method, path, name, r.text)
        assert_error(r, 422, "invalid", name)


def test_every_number_in_a_request_body_has_bounds(world: World) -> None:
    """The same class of bug in bodies: an unbounded integer would reach the database."""
    document = world.api.app.openapi()  # type: ignore[attr-defined]
    schemas = document["components"]["schemas"]
    names = _refs([op.get("requestBody", {}) for ops in document["paths"].values()
                   for op in ops.values()])  # fmt: skip
    while more := _refs([schemas[n] for n in names]) - names:
        names |= more
    unbounded = [
        (name, field)
        for name in sorted(names)
        for field, schema in schemas[name].get("properties", {}).items()
        for kind in [schema, *schema.get("anyOf", [])]
        if kind.get("type") in ("integer", "number") and "maximum" not in kind
    ]
    assert len(names) >= 10 and unbounded == []


def _refs(nodes: Any) -> set[str]:
    found: set[str] = set()
    stack = [nodes]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "$ref" in node:
                found.add(node["$ref"].rsplit("/", 1)[-1])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


# --- what the server builds: output archives ---


def test_output_archives_hold_only_files_dirs_and_inner_relative_links(world: World) -> None:
    script = (
        "mkdir -p outputs/d && echo hi > outputs/d/f && mkfifo outputs/pipe && "
        "ln -s /etc/passwd outputs/abs && ln -s ../../../../x outputs/esc && "
        "ln -s d/f outputs/rel && ln -s / outputs/root && ln outputs/d/f outputs/hard"
    )
    job = submit(world, spec(script)).json()
    assert world.run_loop_until(job["id"])["state"] == "succeeded"
    out = world.api.get(f"{API}/jobs/{job['id']}/outputs", headers=world.pi)
    assert out.status_code == 200, out.text
    with tarfile.open(fileobj=io.BytesIO(out.content)) as tar:
        kinds = {m.name: m.type for m in tar.getmembers()}
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym()}
    assert kinds == {
        "outputs": tarfile.DIRTYPE,
        "outputs/d": tarfile.DIRTYPE,
        "outputs/d/f": tarfile.REGTYPE,
        "outputs/hard": tarfile.REGTYPE,  # a copy, not a link entry
        "outputs/rel": tarfile.SYMTYPE,
    }
    assert links == {"outputs/rel": "d/f"}


def test_output_archives_have_a_budget(world: World) -> None:
    job = submit(world, spec("mkdir -p outputs && for i in $(seq 30); do touch outputs/$i; done"))
    assert world.run_loop_until(job.json()["id"])["state"] == "succeeded"
    ctx_of(world).archive_limits = ArchiveLimits(max_entries=20)
    r = world.api.get(f"{API}/jobs/{job.json()['id']}/outputs", headers=world.pi)
    assert_error(r, 413, "too_large", "outputs")


def test_an_upload_that_is_no_archive_is_refused_and_leaves_nothing(
    world: World, files: Path
) -> None:
    r = upload(world, bytes(range(256)) * (160 * 1024))  # 40 MiB, not a tar
    assert_error(r, 422, "invalid", "workdir")
    assert "not a tar archive" in r.json()["error"]["message"]
    assert files_on_disk(files) == []
