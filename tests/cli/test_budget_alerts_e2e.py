"""Budget alerts end to end: `fabbrica up` with a real SMTP server (aiosmtpd); one job spends
a whole allocation, its member gets three emails (75, 90, 100 %) in order, and a restart of
the server sends none of them again."""

from __future__ import annotations

import json
import os
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.cli.server import Server, fabbrica
from tests.cli.test_jobs_e2e import Cli
from tests.db.test_notify_smtp import SmtpServer, free_port

pytestmark = pytest.mark.slow
GPUS = 16
SECONDS = 4  # the job's time limit: it is stopped then, and charged all it reserved
GRANT = GPUS * SECONDS / 3600  # GPU-hours: the job spends the whole allocation


def alerts(smtp: SmtpServer) -> list[EmailMessage]:
    """The budget alerts received (the proposal's emails came before them)."""
    return [m for m in smtp.inbox.messages() if "GPU-hours used" in str(m["Subject"])]


# one database: the alerts' SQL runs on both in tests/db/test_budget_alerts.py
@pytest.mark.parametrize("server_env", ["sqlite"], indirect=True)
def test_one_job_past_100_percent_mails_three_alerts_once_across_a_restart(
    server: Server, tmp_path: Path
) -> None:
    smtp = SmtpServer(free_port())
    smtp.start()
    try:
        python_bin = str(Path(sys.executable).parent)
        server.env.update(
            FABBRICA_LOCAL_GPUS=str(GPUS),
            FABBRICA_LOOP_INTERVAL_SECONDS="0.2",
            FABBRICA_SMTP_HOST="127.0.0.1",
            FABBRICA_SMTP_PORT=str(smtp.port),
            PATH=f"{python_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        server.start()
        admin = Cli(server)
        token = admin.run("user", "add", "eng@startup.it", "--name", "Eng", "--json")["token"]
        cli = Cli(server, token)
        org = cli.run("org", "add", "S", "--country", "IT", "--type", "startup", "--json")
        project = cli.run("project", "add", "P", "--org", str(org["id"]), "--json")["id"]
        cli.run("apply", "--project", project, "--call", "local-playground",
                "--gpu-hours", f"{GRANT:.12f}", "--months", "1",
                "--declare-civilian-ai-act", "--json")  # fmt: skip
        spec = tmp_path / "job.yaml"
        spec.write_text(
            f"name: spender\nrun: sleep 60\nresources: {{gpus: {GPUS}, time_limit: {SECONDS}s}}\n"
        )
        ran = fabbrica("run", str(spec), "--project", project, "--wait", "--json",
                       env=server.client_env(token), timeout=120)  # fmt: skip
        assert ran.returncode == 1 and ran.stdout, ran.stderr  # 1: the job did not succeed
        job = json.loads(ran.stdout)
        assert job["state"] == "timed_out" and job["gpu_hours"] == pytest.approx(GRANT)

        deadline = time.monotonic() + 30
        while len(alerts(smtp)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        (allocation,) = cli.run("allocations", "--json")
        prefix = (
            f"[Fabbrica] Allocation {allocation['id']} of {project} at local: "
            f"{GRANT:.3g} of {GRANT:.3g} GPU-hours used"
        )
        received = alerts(smtp)
        assert [m["Subject"] for m in received] == [f"{prefix} (75%)", f"{prefix} (90%)",
                                                    f"{prefix} (100%)"]  # fmt: skip
        assert all(m["To"] == "eng@startup.it" for m in received)
        assert "no new job can run on it" in received[2].get_content()

        server.stop()
        server.env.pop("FABBRICA_BOOTSTRAP_TOKEN")
        server.start()
        time.sleep(2)  # ten ticks of the control loop
        notices = cli.run("notices", "--json")
        assert len(alerts(smtp)) == 3
        assert [n["threshold"] for n in notices] == ["used_100", "used_90", "used_75"]
    finally:
        smtp.stop()
