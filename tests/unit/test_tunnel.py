"""The notebook tunnel's frames (core.tunnel), the agent's checks of what it is asked to
reach (agent.tunnel), and the connection file's checks (backends.notebook)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabbrica.agent.tunnel import _path, tunnel_url
from fabbrica.backends.notebook import read_connection
from fabbrica.core import tunnel
from fabbrica.core.tunnel import TunnelError


@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.sampled_from(sorted(tunnel.KINDS)),
    st.binary(max_size=512),
)
def test_a_data_frame_reads_back_as_it_was_written(stream: int, kind: int, data: bytes) -> None:
    assert tunnel.parse_data(tunnel.data_frame(stream, kind, data)) == (stream, kind, data)


def test_a_bad_data_frame_is_refused() -> None:
    with pytest.raises(TunnelError, match="shorter"):
        tunnel.parse_data(b"\x00\x00")
    with pytest.raises(TunnelError, match="unknown kind"):
        tunnel.parse_data(b"\x00\x00\x00\x01\x09payload")


def test_control_messages_are_checked() -> None:
    sent = tunnel.control("http", id=3, job=7, method="GET", path="/notebooks/7/lab")
    assert tunnel.parse_control(sent)["job"] == 7
    assert tunnel.ready_jobs(tunnel.parse_control(tunnel.control("ready", jobs=[1, 2]))) == {1, 2}
    for bad, why in (
        ("not json", "not JSON"),
        ('{"op": "launch", "id": 1}', "known op"),
        ('{"op": "http"}', "stream id"),
        ('{"op": "end", "id": true}', "stream id"),
        ('{"op": "end", "id": 0}', "stream id"),
        ("x" * (tunnel.MAX_CONTROL + 1), "64 KiB"),
    ):
        with pytest.raises(TunnelError, match=why):
            tunnel.parse_control(bad)
    with pytest.raises(TunnelError, match="job ids"):
        tunnel.ready_jobs({"op": "ready", "jobs": ["1"]})
    with pytest.raises(TunnelError, match="pairs"):
        tunnel.headers_of([["a"]])
    assert tunnel.headers_of([["a", "b"]]) == [("a", "b")]


def test_the_agent_reaches_only_the_jobs_own_path() -> None:
    ok = {"path": "/notebooks/7/api/contents/My file.ipynb", "query": "content=1"}
    assert _path(ok, 7) == "/notebooks/7/api/contents/My%20file.ipynb?content=1"
    for bad in (
        {"path": "/notebooks/8/lab"},  # another job's
        {"path": "/notebooks/7/../8/api/contents"},  # folded into another's by a client
        {"path": "/notebooks/7/./x"},
        {"path": "/api/v1/agent/sync"},
        {"path": "/notebooks/7/lab\r\nX-Injected: 1"},
        {"path": "/notebooks/7/lab", "query": "a b"},
    ):
        with pytest.raises(TunnelError):
            _path(bad, 7)
    assert tunnel_url("https://f.eu/") == "wss://f.eu/api/v1/agent/tunnel"
    assert tunnel_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/api/v1/agent/tunnel"


def test_the_connection_file_is_checked(tmp_path: Path) -> None:
    job = tmp_path / "fab-7"
    folder = job / "work" / ".notebook"
    folder.mkdir(parents=True)
    path = folder / "notebook.json"
    base = "/notebooks/7/"
    good = {"host": "127.0.0.1", "port": 40000, "token": "a" * 32, "base_url": base}
    path.write_text(json.dumps(good))
    found = read_connection(job, base)
    assert found is not None and found.loopback and found.port == 40000
    assert found.owner == path.stat().st_uid
    assert read_connection(job, "/notebooks/8/") is None  # another notebook's file
    path.write_text(json.dumps(good | {"host": "10.1.2.3"}))
    found = read_connection(job, base)
    assert found is not None and not found.loopback
    for bad in ({"host": "0.0.0.0"}, {"host": "example.org"}, {"port": 22}, {"token": "x"}):
        path.write_text(json.dumps(good | bad))
        assert read_connection(job, base) is None, bad
    # never through a link: neither the file nor a folder on the way
    other = tmp_path / "fab-8" / "work" / ".notebook"
    other.mkdir(parents=True)
    (other / "notebook.json").write_text(json.dumps(good))
    path.unlink()
    path.symlink_to(other / "notebook.json")
    assert read_connection(job, base) is None
    path.unlink()
    folder.rmdir()
    folder.symlink_to(other)
    assert read_connection(job, base) is None


def test_a_websocket_message_crosses_in_parts_and_whole() -> None:
    for message in ("é" * tunnel.CHUNK, b"\x00" * (2 * tunnel.CHUNK + 5), "", b""):
        frames = tunnel.message_frames(9, message)
        assert all(len(f) <= tunnel.CHUNK + tunnel.HEADER.size for f in frames)
        whole = tunnel.Message()
        got = [whole.add(*tunnel.parse_data(f)[1:]) for f in frames]
        assert got[:-1] == [None] * (len(frames) - 1) and got[-1] == message
    with pytest.raises(TunnelError, match="body"):
        tunnel.Message().add(tunnel.DATA, b"x")
