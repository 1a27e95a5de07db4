"""`fabbrica up` and the CLI as real processes on real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

from fabbrica.catalog.loader import default_catalog_path
from fabbrica.catalog.model import Catalog
from tests.cli.server import STARTUP_LIMIT, Server, clean_env, fabbrica

pytestmark = pytest.mark.slow


def test_up_serves_the_catalog_with_tokens(server: Server, catalog: Catalog) -> None:
    server.start()
    assert server.started_in < STARTUP_LIMIT
    factories = httpx.get(
        f"{server.url}/api/v1/factories", headers={"Authorization": "Bearer t"}
    ).json()
    ids = [f["id"] for f in factories]
    # the 19 of the catalog, in order, and `local` (this machine, emulated GPUs) beside them
    assert ids == [*(f.id for f in catalog.factories), "local"] and len(ids) == 20
    assert [f["emulated"] for f in factories] == [False] * 19 + [True]
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        denied = httpx.get(f"{server.url}/api/v1/factories", headers=headers)
        assert denied.status_code == 401
        assert set(denied.json()["error"]) == {"code", "message", "field"}

    listed = fabbrica("catalog", "--json", env=server.client_env("t"))
    assert listed.returncode == 0, listed.stderr
    assert [f["id"] for f in json.loads(listed.stdout)] == ids
    table = fabbrica("catalog", env=server.client_env("t"))
    assert table.returncode == 0 and "it4lia" in table.stdout and "IT" in table.stdout


def test_state_survives_a_restart(server: Server) -> None:
    server.start()
    admin = server.client_env("t")
    made = fabbrica("user", "add", "Alice@Example.eu", "--name", "Alice", "--json", env=admin)
    assert made.returncode == 0, made.stderr
    alice = json.loads(made.stdout)
    assert alice["email"] == "alice@example.eu" and alice["token"].startswith("fab_")
    extra = json.loads(fabbrica("token", "create", "--name", "ci", "--json", env=admin).stdout)
    revoked = fabbrica("token", "revoke", str(extra["id"]), "--json", env=admin)
    assert json.loads(revoked.stdout)["revoked_at"] is not None

    server.stop()
    server.env.pop("FABBRICA_BOOTSTRAP_TOKEN")
    server.start()

    me = fabbrica("whoami", "--json", env=server.client_env(alice["token"]))
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["id"] == alice["id"]
    users = json.loads(fabbrica("user", "list", "--json", env=admin).stdout)
    assert [(u["email"], u["role"]) for u in users] == [
        ("admin@localhost", "admin"),
        ("agent.local@localhost", "agent"),  # the embedded factory's in-process agent
        ("alice@example.eu", "user"),
    ]
    gone = fabbrica("whoami", env=server.client_env(extra["token"]))
    assert gone.returncode == 1 and "revoked" in gone.stderr
    tokens = json.loads(fabbrica("token", "list", "--json", env=admin).stdout)
    assert [t["revoked_at"] is not None for t in tokens] == [False, True]
    assert extra["token"] not in json.dumps(tokens)


def test_generated_admin_token_is_printed_once(tmp_path: Path) -> None:
    srv = Server(data_dir=tmp_path / "data", env=clean_env(), log=tmp_path / "up.log")
    try:
        srv.start()
        lines = [ln.strip() for ln in srv.output().splitlines() if ln.strip().startswith("fab_")]
        assert len(lines) == 1
        me = httpx.get(f"{srv.url}/api/v1/me", headers={"Authorization": f"Bearer {lines[0]}"})
        assert me.json()["role"] == "admin"
        srv.stop()
        srv.log.unlink()
        srv.start()
        assert "fab_" not in srv.output()
    finally:
        srv.stop()


def test_bad_catalog_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    data = yaml.safe_load(default_catalog_path().read_text())
    data["factories"][3]["systems"][0]["partitions"][0]["gpus_per_node"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    data_dir = tmp_path / "data"
    result = fabbrica("up", "--data-dir", str(data_dir), "--catalog", str(bad), env=clean_env())
    assert result.returncode == 2
    assert "gpus_per_node" in result.stderr and str(bad) in result.stderr
    assert "meluxina-ai" in result.stderr
    assert not data_dir.exists()


def test_client_errors_and_exit_codes(tmp_path: Path) -> None:
    env = clean_env(FABBRICA_CONFIG=str(tmp_path / "none.json"), FABBRICA_URL="http://127.0.0.1:9")
    no_token = fabbrica("catalog", env=env)
    assert no_token.returncode == 2 and "FABBRICA_TOKEN" in no_token.stderr
    unreachable = fabbrica("catalog", env={**env, "FABBRICA_TOKEN": "x"})
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
    usage = fabbrica("up", "--port", "not-a-port", env=env)
    assert usage.returncode == 2
    bad_role = fabbrica("user", "add", "a@b.eu", "--name", "A", "--role", "god", env=env)
    assert bad_role.returncode == 2


def test_login_saves_url_and_token(server: Server, tmp_path: Path) -> None:
    server.start()
    config = tmp_path / "cfg" / "config.json"
    env = clean_env(FABBRICA_CONFIG=str(config))
    wrong = fabbrica("login", "--url", server.url, "--token", "nope", env=env)
    assert wrong.returncode == 1 and not config.exists()
    ok = fabbrica("login", "--url", server.url, "--token", "t", env=env)
    assert ok.returncode == 0, ok.stderr
    assert config.stat().st_mode & 0o777 == 0o600
    me = fabbrica("whoami", "--json", env=env)
    assert json.loads(me.stdout)["email"] == "admin@localhost"
    detail = fabbrica("factory", "jaif", env=env)
    assert detail.returncode == 0 and "JUPITER" in detail.stdout
    missing = fabbrica("factory", "atlantis", env=env)
    assert missing.returncode == 2 and "atlantis" in missing.stderr


def test_an_idle_connection_outlives_the_clients_keep_alive(server: Server) -> None:
    """The server keeps an idle connection longer than httpx's 5 s (and a proxy's 60 s):
    the client closes first, never the server while a request is on its way (a reset POST)."""
    import http.client
    import socket
    import time
    from urllib.parse import urlsplit

    from fabbrica.server import KEEP_ALIVE_SECONDS

    assert KEEP_ALIVE_SECONDS > 60
    server.start()
    where = urlsplit(server.url)
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=10)
    try:
        conn.request("GET", "/api/v1/health")
        first = conn.getresponse()
        assert first.status == 200 and first.read()
        time.sleep(6.5)  # idle past httpx's expiry (and uvicorn's own default of 5 s)
        assert conn.sock is not None
        conn.sock.setblocking(False)
        try:
            closed = conn.sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            closed = False  # nothing to read: still open
        assert not closed, "the server closed an idle connection after 6.5 s"
        conn.sock.setblocking(True)
        conn.request("GET", "/api/v1/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
