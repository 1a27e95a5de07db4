"""`fabbrica login` like `gh auth login` (both databases): the CLI, a real process, starts
the device grant at the real provider and prints a URL; the test signs in there in
Chromium; the CLI saves an API token (mode 600) with which `whoami` and `jobs` work;
`fabbrica logout` revokes and forgets it. FABBRICA_TOKEN still wins when set."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.browser import browser_page
from tests.cli.server import clean_env, fabbrica
from tests.conftest import ADMIN_TOKEN
from tests.identity.conftest import Portal
from tests.oidc_provider import Account

LOGIN_LIMIT = 120.0  # a bound that catches a hang, not a measure of speed


def device_url(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    deadline = time.monotonic() + LOGIN_LIMIT
    said = ""
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        said += line
        found = re.search(r"\(or open (\S+)\)", said)
        if found:
            return found[1]
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no device URL from fabbrica login: {said}")


def cli_login(portal: Portal, account: Account, env: dict[str, str], *extra: str) -> str:
    """`fabbrica login --url ... [extra]`, completed in Chromium at the provider (with the
    account's one-time code when `--mfa`); what the CLI said on stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fabbrica", "login", "--url", portal.url, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = device_url(process)
        with browser_page() as browsed:
            page = browsed.page
            page.goto(url)
            page.click("#continue")  # the provider shows the code and asks to confirm
            page.fill("#login", account.sub)
            page.fill("#password", account.password)
            if "--mfa" in extra:
                assert account.otp is not None
                page.fill("#otp", account.otp)
            page.click("#sign-in")
            page.click("#allow")
            assert "go back to your terminal" in page.inner_text("#done")
        _, err = process.communicate(timeout=LOGIN_LIMIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    return err


def test_login_with_the_device_grant_then_whoami_jobs_and_logout(
    portal: Portal, tmp_path: Path
) -> None:
    account = portal.account(name="Linus Terminal")
    config = tmp_path / "config.json"
    env = clean_env(FABBRICA_CONFIG=str(config))
    err = cli_login(portal, account, env)
    assert f"as {account.email} (user)" in err
    saved = json.loads(config.read_text())
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and saved["url"] == portal.url
    assert saved["token"].startswith("fab_")

    whoami = fabbrica("whoami", "--json", env=env)
    assert whoami.returncode == 0 and json.loads(whoami.stdout)["email"] == account.email
    jobs = fabbrica("jobs", env=env)
    assert jobs.returncode == 0, jobs.stderr
    as_admin = fabbrica("whoami", "--json", env={**env, "FABBRICA_TOKEN": ADMIN_TOKEN})
    assert json.loads(as_admin.stdout)["role"] == "admin"  # FABBRICA_TOKEN still wins

    out = fabbrica("logout", env=env)
    assert out.returncode == 0, out.stderr
    assert "token" not in json.loads(config.read_text())
    assert fabbrica("whoami", env=env).returncode != 0
    revoked = httpx.get(
        f"{portal.url}/api/v1/me", headers={"Authorization": f"Bearer {saved['token']}"}
    )
    assert revoked.status_code == 401  # revoked at logout, not only forgotten
