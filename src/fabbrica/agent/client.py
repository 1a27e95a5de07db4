"""The agent's side of the agent API, over HTTP."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx

from fabbrica.core.agent_api import ApiRefused, ApiUnavailable, SiteAccount, SyncAnswer
from fabbrica.core.executor import (
    Capacity,
    CheckpointRequest,
    DataMount,
    LaunchRequest,
    RunStatus,
)

API = "/api/v1"


class AgentClient:
    """`AgentApi` over HTTP, with the agent's factory token."""

    def __init__(
        self, url: str, token: str, *, timeout: float = 30.0, http: httpx.Client | None = None
    ) -> None:
        """`http` replaces the HTTP client (tests pass the app's TestClient)."""
        self.http = http or httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        self.http.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, API + path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiUnavailable(f"{method} {path}: {exc}") from exc
        if response.status_code >= 500:
            raise ApiUnavailable(f"{method} {path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise ApiRefused(f"{method} {path}: HTTP {response.status_code}: {message}")
        return response

    def sync(
        self,
        backend: str,
        capabilities: list[str],
        capacity: list[Capacity],
        runs: list[RunStatus],
        wait: float = 0.0,
    ) -> SyncAnswer:
        body = {
            "backend": backend,
            "capabilities": capabilities,
            "capacity": [
                {
                    "partition": c.partition,
                    "gpu_model": c.gpu_model,
                    "total_gpus": c.total_gpus,
                    "free_gpus": c.free_gpus,
                    "queued": c.queued,
                }
                for c in capacity
            ],
            "runs": [_run_json(r) for r in runs],
            "wait_s": round(wait, 3),
        }
        held: dict[str, Any] = {}
        limits = self.http.timeout
        if wait > 0 and limits.read is not None:  # the server may hold it up to `wait` s
            read = limits.read + wait
            held["timeout"] = httpx.Timeout(
                limits.connect, read=read, write=limits.write, pool=limits.pool
            )
        data = self._call("POST", "/agent/sync", json=body, **held).json()
        return SyncAnswer(
            factory=data["factory"],
            lease_seconds=float(data["lease_seconds"]),
            launch=[_launch(item) for item in data["launch"]],
            cancel=list(data["cancel"]),
            wait_s=float(data.get("wait_s") or 0.0),  # an older server holds no sync
        )

    def accounts(self) -> list[SiteAccount]:
        return [
            SiteAccount(
                a["account"], a["project"], a["state"], int(a["gpu_minutes"]), tuple(a["users"])
            )
            for a in self._call("GET", "/agent/accounts").json()
        ]

    def download(self, api_path: str, dest: Path) -> Path:
        path = API + api_path.removeprefix(API)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.http.stream("GET", path) as response:
                if response.status_code >= 400:
                    raise ApiRefused(f"GET {path}: HTTP {response.status_code}")
                with dest.open("wb") as handle:
                    for chunk in response.iter_bytes():
                        handle.write(chunk)
        except httpx.HTTPError as exc:
            raise ApiUnavailable(f"GET {path}: {exc}") from exc
        return dest

    def send_log(self, job_id: int, offset: int, data: bytes) -> int:
        response = self._call(
            "POST",
            f"/agent/jobs/{job_id}/log",
            params={"offset": offset},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return int(response.json()["size"])

    def send_checkpoint(
        self, job_id: int, run: int, *, offset: int, size: int, sha256: str, data: bytes
    ) -> tuple[int, bool]:
        response = self._call(
            "POST",
            f"/agent/jobs/{job_id}/checkpoint",
            params={"run": run, "offset": offset, "size": size, "sha256": sha256},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        body = response.json()
        return int(body["received"]), bool(body["stored"])


def _run_json(r: RunStatus) -> dict[str, Any]:
    return {
        "run_tag": r.run_tag,
        "state": r.state.value,
        "started_at": _iso(r.started_at),
        "ended_at": _iso(r.ended_at),
        "exit_code": r.exit_code,
        "reason": (r.reason or None) and r.reason[:2000],
        "site_job_id": r.site_job_id,
        "gpus": r.gpus,
        "elapsed_s": r.elapsed_s,
    }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _checkpoint(item: dict[str, Any] | None) -> CheckpointRequest | None:
    if not item:
        return None
    return CheckpointRequest(
        str(item["dir"]),
        int(item["every_s"]),
        int(item["grace_s"]),
        archive=item.get("archive") or None,
        sha256=item.get("sha256") or None,
    )


def _launch(item: dict[str, Any]) -> LaunchRequest:
    return LaunchRequest(
        run_tag=item["run_tag"],
        run=int(item.get("run") or 1),
        checkpoint=_checkpoint(item.get("checkpoint")),
        partition=item["partition"],
        gpus=int(item["gpus"]),
        nodes=int(item["nodes"]),
        time_limit=dt.timedelta(seconds=int(item["time_limit_s"])),
        command=item["command"],
        env=dict(item["env"]),
        gpu_model=item["gpu_model"],
        workdir_archive=item["workdir_archive"],
        account=item["account"],
        user=item["user"],
        datasets=tuple(
            DataMount(
                d["name"],
                tuple((f[0], f[1]) for f in d["files"]),
                version=str(d.get("version") or d["name"]),
                size=int(d.get("size") or 0),
            )
            for d in item.get("datasets") or ()
        ),
    )
