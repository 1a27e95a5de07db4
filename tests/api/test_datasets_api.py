"""Data sets through HTTP on SQLite and PostgreSQL: uploads in byte ranges that resume,
content-addressed versions, Croissant, quota, deletion rules, tenancy, bad input."""

from __future__ import annotations

import hashlib
import io
import tarfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from fastapi.testclient import TestClient

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.catalog.local import local_factory
from fabbrica.catalog.model import Catalog
from fabbrica.services import datasets, identity
from fabbrica.services.access.calls import seed_calls
from fabbrica.services.dataset_store import object_path
from fabbrica.store.db import Database
from fabbrica.store.types import utcnow
from tests.api.helpers import API, Headers, assert_error, snapshot
from tests.api.test_jobs_api import tenant
from tests.conftest import ADMIN_TOKEN, bearer

QUOTA = 2 * 1024 * 1024


@dataclass
class World:
    api: TestClient
    db: Database
    files: Path
    pi: Headers
    project: str
    other: Headers
    other_project: str


@pytest.fixture
def world(db: Database, catalog: Catalog, tmp_path: Path) -> Iterator[World]:
    full = catalog.with_factory(local_factory(4))
    with db.session() as session:
        identity.bootstrap(session, now=utcnow(), token=ADMIN_TOKEN)
        seed_calls(session, full, utcnow())
    ctx = AppContext(db=db, catalog=full, files=tmp_path, dataset_quota_bytes=QUOTA)
    with TestClient(create_app(ctx), raise_server_exceptions=True) as api:
        admin = bearer(ADMIN_TOKEN)
        pi, project, _ = tenant(api, admin, "pi@startup.it", 10)
        other, other_project, _ = tenant(api, admin, "other@startup.it", 10)
        yield World(api, db, tmp_path, pi, project, other, other_project)


def pack(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Uploader(Protocol):
    """What the upload helpers need of a test's world: a client and the PI's headers."""

    @property
    def api(self) -> TestClient: ...

    @property
    def pi(self) -> Headers: ...

    @property
    def project(self) -> str: ...


def start(w: Uploader, data: bytes, name: str = "scans", **extra: Any) -> Any:
    body = {"project": w.project, "name": name, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), **extra}  # fmt: skip
    return w.api.post(f"{API}/dataset-uploads", headers=w.pi, json=body)


def put(w: Uploader, upload: str, data: bytes, start_at: int, size: int) -> Any:
    end = start_at + len(data) - 1
    headers = {**w.pi, "Content-Type": "application/octet-stream",
               "Content-Range": f"bytes {start_at}-{end}/{size}"}  # fmt: skip
    return w.api.put(f"{API}/dataset-uploads/{upload}", headers=headers, content=data)


def add(w: Uploader, files: dict[str, bytes], name: str = "scans", **extra: Any) -> Any:
    data = pack(files)
    upload = start(w, data, name, **extra)
    assert upload.status_code == 201, upload.text
    uid = upload.json()["id"]
    assert put(w, uid, data, 0, len(data)).status_code == 200
    done = w.api.post(f"{API}/dataset-uploads/{uid}/commit", headers=w.pi)
    assert done.status_code == 201, done.text
    return done.json()


def test_an_upload_resumes_where_the_server_stopped(world: World) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    data = pack({"train/a.bin": payload, "labels.csv": b"id,label\n1,cat\n"})
    first = start(world, data, residency="IT,fr", license="CC-BY-4.0", description="Scans")
    assert first.status_code == 201 and first.json()["received"] == 0
    uid = first.json()["id"]
    half = len(data) // 2
    assert put(world, uid, data[:half], 0, len(data)).status_code == 200
    # the client died; asked again for the same bytes, the server says where it stopped
    again = start(world, data)
    assert again.json() == {**first.json(), "received": half}
    head = world.api.head(f"{API}/dataset-uploads/{uid}", headers=world.pi)
    assert head.headers["Upload-Offset"] == str(half)
    # a range that does not start there is refused, nothing written
    assert_error(put(world, uid, data[:10], 0, len(data)), 409, "conflict", "offset")
    assert put(world, uid, data[half:], half, len(data)).json()["received"] == len(data)
    done = world.api.post(f"{API}/dataset-uploads/{uid}/commit", headers=world.pi).json()
    assert (done["name"], done["version"], done["residency"]) == ("scans", 1, "FR,IT")
    files = {f["path"]: f for f in done["files"]}
    assert files["train/a.bin"]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert files["train/a.bin"]["size"] == len(payload)
    stored = object_path(world.files, files["train/a.bin"]["sha256"])
    assert stored.read_bytes() == payload and stored.stat().st_mode & 0o777 == 0o444
    got = world.api.get(
        f"{API}/datasets/{done['id']}/versions/1/file?path=train/a.bin", headers=world.pi
    )
    assert hashlib.sha256(got.content).hexdigest() == files["train/a.bin"]["sha256"]
    # the upload is gone once committed
    assert_error(world.api.get(f"{API}/dataset-uploads/{uid}", headers=world.pi), 404,
                 "not_found", "upload_id")  # fmt: skip


def test_versions_are_immutable_and_share_their_bytes(world: World) -> None:
    one = add(world, {"a.txt": b"alpha", "b.txt": b"beta"}, data_class="public")
    two = add(world, {"a.txt": b"alpha", "b.txt": b"beta 2"})
    assert (one["version"], two["version"]) == (1, 2)
    assert two["class"] == "public"  # a new version keeps the data set's terms
    shown = world.api.get(f"{API}/datasets/{one['id']}?version=1", headers=world.pi).json()
    assert {f["path"]: f["size"] for f in shown["files"]} == {"a.txt": 5, "b.txt": 4}
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    # other terms for a new version: refused, naming the field
    data = pack({"a.txt": b"x"})
    assert_error(start(world, data, residency="EU"), 409, "conflict", "residency")
    # deleting version 1 keeps the bytes version 2 still names
    alpha = object_path(world.files, hashlib.sha256(b"alpha").hexdigest())
    beta = object_path(world.files, hashlib.sha256(b"beta").hexdigest())
    r = world.api.delete(f"{API}/datasets/{one['id']}?version=1", headers=world.pi)
    assert r.json() == {"deleted": ["scans@1"]}
    assert alpha.exists() and not beta.exists()
    listed = world.api.get(f"{API}/datasets", headers=world.pi).json()
    assert [(d["name"], d["version"]) for d in listed] == [("scans", 2)]
    r = world.api.delete(f"{API}/datasets/{one['id']}?version=2", headers=world.pi)
    assert r.json() == {"deleted": ["scans@2"]} and not alpha.exists()
    assert world.api.get(f"{API}/datasets", headers=world.pi).json() == []  # the last one


def test_croissant_document_of_a_version(world: World) -> None:
    done = add(world, {"data/train.csv": b"x,y\n1,2\n"}, license="CC-BY-4.0",
               description="Two numbers", residency="EU")  # fmt: skip
    r = world.api.get(f"{API}/datasets/{done['id']}/croissant.json", headers=world.pi)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/ld+json")
    doc = r.json()
    assert (
        doc["@type"] == "sc:Dataset" and doc["conformsTo"] == "http://mlcommons.org/croissant/1.1"
    )
    assert doc["@context"]["cr"] == "http://mlcommons.org/croissant/"
    assert (doc["name"], doc["description"], doc["license"]) == (
        "scans", "Two numbers", "CC-BY-4.0")  # fmt: skip
    assert doc["version"] == "1.0.0"
    [entry] = doc["distribution"]
    assert entry["@type"] == "cr:FileObject" and entry["name"] == "data/train.csv"
    assert entry["sha256"] == hashlib.sha256(b"x,y\n1,2\n").hexdigest()
    assert entry["contentSize"] == "8 B" and entry["encodingFormat"] == "text/csv"
    assert_valid_croissant(doc)


def assert_valid_croissant(doc: dict[str, Any]) -> None:
    """mlcroissant (MLCommons' reference) reads the document with no error."""
    with warnings.catch_warnings():  # rdflib, under mlcroissant, warns of its own API
        warnings.simplefilter("ignore", DeprecationWarning)
        import mlcroissant as mlc

        dataset = mlc.Dataset(jsonld=doc)
    assert not dataset.metadata.ctx.issues.errors, dataset.metadata.ctx.issues.errors


def test_bad_input_names_the_field_and_changes_nothing(world: World) -> None:
    data = pack({"a": b"1"})
    before = snapshot(world.db)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "Bad Name"}, "name"),
        ({"residency": "XX"}, "residency"),
        ({"residency": ["EU", "IT"]}, "residency"),
        ({"class": "personal"}, "residency"),
        ({"class": "secret"}, "class"),
        ({"sha256": "nothex"}, "sha256"),
        ({"project": "FAB-NOPE"}, "project"),
        ({"size": 10 * QUOTA}, "size"),
    ]
    for extra, field in cases:
        body = {"project": world.project, "name": "ok", "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), **extra}  # fmt: skip
        r = world.api.post(f"{API}/dataset-uploads", headers=world.pi, json=body)
        status = 413 if field == "size" else 404 if field == "project" else 422
        code = {413: "too_large", 404: "not_found", 422: "invalid"}[status]
        assert_error(r, status, code, field)
    assert snapshot(world.db) == before
    uid = start(world, data).json()["id"]
    headers = {**world.pi, "Content-Type": "application/octet-stream"}
    r = world.api.put(f"{API}/dataset-uploads/{uid}", headers=headers, content=data)
    assert_error(r, 422, "invalid", "Content-Range")
    # bytes that are not what was announced: refused at commit
    wrong = b"\x00" * len(data)
    assert put(world, uid, wrong, 0, len(data)).status_code == 200
    r = world.api.post(f"{API}/dataset-uploads/{uid}/commit", headers=world.pi)
    assert_error(r, 422, "invalid", "sha256")
    # the upload starts again from byte 0, and then succeeds
    assert world.api.get(f"{API}/dataset-uploads/{uid}", headers=world.pi).json()["received"] == 0
    assert put(world, uid, data, 0, len(data)).status_code == 200
    done = world.api.post(f"{API}/dataset-uploads/{uid}/commit", headers=world.pi)
    assert done.status_code == 201 and done.json()["files"][0]["path"] == "a"


def test_another_tenants_data_set_is_not_found(world: World) -> None:
    done = add(world, {"secret.csv": b"patient,1\n"}, data_class="personal", residency="IT")
    other = world.other
    base = f"{API}/datasets/{done['id']}"
    for r in (
        world.api.get(base, headers=other),
        world.api.get(f"{base}/croissant.json", headers=other),
        world.api.get(f"{base}/versions/1/file?path=secret.csv", headers=other),
        world.api.delete(base, headers=other),
    ):
        assert_error(r, 404, "not_found", "dataset_id")
    assert world.api.get(f"{API}/datasets", headers=other).json() == []
    # nor can another tenant upload into the project or reach the upload
    data = pack({"x": b"1"})
    body = {"project": world.project, "name": "x", "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    r = world.api.post(f"{API}/dataset-uploads", headers=other, json=body)
    assert_error(r, 404, "not_found", "project")
    uid = start(world, data, name="mine").json()["id"]
    assert_error(world.api.get(f"{API}/dataset-uploads/{uid}", headers=other), 404,
                 "not_found", "upload_id")  # fmt: skip
    assert world.api.get(base, headers=world.pi).status_code == 200


def test_quota_counts_every_version_and_pending_uploads(world: World) -> None:
    add(world, {"big.bin": b"1" * (QUOTA // 2)})
    data = pack({"big.bin": b"2" * (QUOTA // 2)})
    assert_error(start(world, data), 413, "too_large", "size")


def test_the_start_sweeps_what_a_crash_left_and_keeps_the_rest(world: World) -> None:
    done = add(world, {"kept.bin": b"kept"})
    data = pack({"p": b"pending"})
    pending = start(world, data, name="pending").json()["id"]
    assert_error(put(world, pending, b"x", 0, 1), 422, "invalid", "Content-Range")
    assert put(world, pending, data[:100], 0, len(data)).status_code == 200
    root = world.files / "datasets"
    left = [root / "objects" / ".partial" / "x", root / "uploads" / f"{'0' * 32}.part",
            root / "objects" / "ab" / ("ab" + "0" * 62)]  # fmt: skip
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left behind")
    with world.db.session() as session:
        swept = datasets.sweep_files(session, world.files)
    assert sorted(swept) == sorted(left)
    kept = object_path(world.files, done["files"][0]["sha256"])
    assert kept.read_bytes() == b"kept"
    assert (root / "uploads" / f"{pending}.part").exists()


def test_an_upload_holding_anything_but_files_is_refused_at_commit(world: World) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    for data in (buffer.getvalue(), pack({"../up.txt": b"x"})):
        uid = start(world, data, name="bad").json()["id"]
        assert put(world, uid, data, 0, len(data)).status_code == 200
        r = world.api.post(f"{API}/dataset-uploads/{uid}/commit", headers=world.pi)
        assert_error(r, 422, "invalid", "data")
    assert world.api.get(f"{API}/datasets", headers=world.pi).json() == []
    assert not (world.files / "up.txt").exists()
