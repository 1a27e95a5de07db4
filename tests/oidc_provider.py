"""A real OpenID Provider for the identity tests: `oidc-provider` (npm, a certified OpenID
Connect implementation) run by Node from tests/oidc/provider.mjs, on a free port.

`.ci/run` installs its packages (`npm ci` in tests/oidc); elsewhere a missing Node or
missing packages skip the tests that need it (fail on CI). The test-only endpoints make
accounts, register clients, rotate the signing key and tamper with the next ID token.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import need_service

HERE = Path(__file__).resolve().parent / "oidc"
MFA = "https://refeds.org/profile/mfa"
SFA = "https://refeds.org/profile/sfa"
START_LIMIT = 30.0  # a bound that catches a hang, not a measure of speed


@dataclass
class Account:
    sub: str
    password: str
    email: str
    email_verified: bool = True
    name: str = "Test User"
    otp: str | None = None  # set: the account can sign in with a second factor
    affiliation: list[str] | None = None


class TestProvider:
    """A running provider; `issuer` is its URL."""

    __test__ = False  # not a test class for pytest

    def __init__(self, process: subprocess.Popen[str], issuer: str, secret: str) -> None:
        self.process = process
        self.issuer = issuer
        self._secret = secret

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(
            f"{self.issuer}{path}", json=body, headers={"x-test-secret": self._secret}, timeout=10
        )
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def add_account(self, account: Account) -> Account:
        body = {k: v for k, v in account.__dict__.items() if v is not None}
        self._post("/test/accounts", body)
        return account

    def add_client(self, **client: Any) -> None:
        self._post("/test/clients", client)

    def rotate_key(self) -> str:
        """A new signing key; the old one leaves the JWKS at once. Returns the new kid."""
        return str(self._post("/test/rotate", {})["kid"])

    def tamper_next_id_token(self, *, foreign_key: bool = False, **claims: Any) -> None:
        """The next ID token the token endpoint issues gets these claims (re-signed by the
        provider's key, or by a key of nobody's with `foreign_key`)."""
        self._post("/test/tamper", {"claims": claims, "foreign_key": foreign_key})


@contextmanager
def running_provider() -> Iterator[TestProvider]:
    node = shutil.which("node")
    if node is None:
        need_service("no Node.js (apt-get install nodejs)")
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        need_service(f"oidc-provider is not installed: run `npm ci` in {HERE}")
    secret = secrets.token_urlsafe(16)
    process = subprocess.Popen(
        [str(node), str(HERE / "provider.mjs")],
        cwd=HERE,
        env={"PATH": "/usr/bin:/bin", "OIDC_TEST_SECRET": secret, "NODE_ENV": "test"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(START_LIMIT)
    try:
        if not line or not line[0].strip():
            raise RuntimeError(f"the test OpenID Provider did not start (exit {process.poll()})")
        yield TestProvider(process, json.loads(line[0])["issuer"], secret)
    finally:
        process.stdout.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
