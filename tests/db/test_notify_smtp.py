"""The outbox delivered over real SMTP: a local aiosmtpd server receives what SmtpSender
sends, on both databases. Emails come from the real services (submission, decision,
invitation); a stopped server and a refused recipient are retried, up to MAX_ATTEMPTS."""

from __future__ import annotations

import datetime as dt
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy import select

from fabbrica.api.deps import AppContext
from fabbrica.core.errors import InvalidInput
from fabbrica.core.identity import Role
from fabbrica.services import identity, notify
from fabbrica.services.access import projects, proposals
from fabbrica.services.access.organisations import create_organisation
from fabbrica.services.notify import MAX_ATTEMPTS, SmtpSender
from fabbrica.store.models import OutboxEmail, User
from tests.conftest import Clock

SENDER = "noreply@fabbrica.example"
PI_EMAIL = "zoe@startup.it"
GUEST_EMAIL = "guest@example.org"
TITLE = "Modelli per l'agroalimentare — più robusti"


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts and refuses some recipients."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.refuse: set[str] = set()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        parsed = []
        for envelope in self.envelopes:
            assert isinstance(envelope.content, bytes)
            message = message_from_bytes(envelope.content, policy=policy.default)
            assert isinstance(message, EmailMessage)
            parsed.append(message)
        return parsed


def text_of(message: EmailMessage) -> str:
    """The decoded body, with the wire's CRLF line ends back to newlines."""
    content = message.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SmtpServer:
    port: int
    inbox: Inbox = field(default_factory=Inbox)
    controller: Controller | None = None

    def start(self) -> None:
        assert self.controller is None
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(free_port())
    server.start()
    yield server
    server.stop()


def sender_for(ctx: AppContext, server: SmtpServer) -> SmtpSender:
    return SmtpSender(ctx.db, host="127.0.0.1", port=server.port, sender=SENDER, timeout=5)


@dataclass(frozen=True)
class Outbox:
    pi_id: int
    project_id: str
    proposal_id: int
    secret: str


@pytest.fixture
def outbox(ctx: AppContext, clock: Clock) -> Outbox:
    """A startup's PI applies to the IT4LIA playground (submission and decision emails),
    then invites a guest to the project (an invitation email)."""
    with ctx.db.session() as s:
        pi, _ = identity.create_user(
            s, email=PI_EMAIL, name="Zoë Bianchi", role=Role.USER, now=clock()
        )
        org = create_organisation(
            s,
            pi,
            ctx.catalog,
            name="Startup srl",
            country="IT",
            type="startup",
            sector=None,
            now=clock(),
        )
        project = projects.create_project(
            s, pi, ctx.catalog, title=TITLE, org_id=org.id, mode=None, now=clock()
        )
        assert project.id is not None
        proposal = proposals.apply(
            s,
            pi,
            ctx.catalog,
            proposals.Application(
                project_id=project.id,
                call_id="it4lia-playground",
                gpu_hours=1000,
                months=1,
                declare_civilian_ai_act=True,
            ),
            now=clock(),
        )
        assert proposal.state == "accepted"
        _, secret = projects.invite(s, pi, project_id=project.id, email=GUEST_EMAIL, now=clock())
        return Outbox(pi.id, project.id, proposal.id, secret)


def rows(ctx: AppContext) -> list[OutboxEmail]:
    with ctx.db.session() as s:
        return list(s.scalars(select(OutboxEmail).order_by(OutboxEmail.id)))


def test_the_outbox_holds_what_the_services_wrote(ctx: AppContext, outbox: Outbox) -> None:
    found = rows(ctx)
    assert [(r.kind, r.to_address) for r in found] == [
        ("submission", PI_EMAIL),
        ("decision", PI_EMAIL),
        ("invitation", GUEST_EMAIL),
    ]
    assert all((r.sent_at, r.attempts, r.last_error) == (None, 0, None) for r in found)


def test_pending_emails_are_delivered_once_with_their_headers_and_body(
    ctx: AppContext, clock: Clock, outbox: Outbox, smtp: SmtpServer
) -> None:
    pending = rows(ctx)
    send = sender_for(ctx, smtp)
    assert send() == 3

    assert len(smtp.inbox.envelopes) == 3
    for envelope, row in zip(smtp.inbox.envelopes, pending, strict=True):
        assert envelope.mail_from == SENDER
        assert envelope.rcpt_tos == [row.to_address]
    submission, decision, invitation = smtp.inbox.messages()
    for message, row in zip((submission, decision, invitation), pending, strict=True):
        assert message["From"] == SENDER
        assert message["To"] == row.to_address
        assert message["Subject"] == row.subject
        assert message.get_content_type() == "text/plain"
        assert text_of(message) == row.body + "\n"

    pid, prop = outbox.project_id, outbox.proposal_id
    assert submission["Subject"] == f"[Fabbrica] Proposal {prop} for {pid} received"
    assert text_of(submission).startswith(
        f"Your proposal {prop} (1,000 GPU-hours, 1 months, call it4lia-playground) was submitted."
    )
    assert decision["Subject"] == f"[Fabbrica] Proposal {prop} accepted"
    assert (
        f"Your proposal {prop} was accepted with 1,000 GPU-hours on it4lia, "
        "valid until 2026-12-21." in text_of(decision)
    )
    assert invitation["To"] == GUEST_EMAIL
    assert invitation["Subject"] == f"[Fabbrica] Invitation to project {pid}"
    body = text_of(invitation)
    assert f"Zoë Bianchi invites you to the project {pid}: {TITLE}." in body
    assert "The invitation expires on 2026-12-05." in body

    # the token in the delivered email lets the guest join the project
    token = re.search(r"fabbrica project accept (\S+)", body)
    assert token is not None
    assert token[1] == outbox.secret
    with ctx.db.session() as s:
        guest, _ = identity.create_user(
            s, email=GUEST_EMAIL, name="Guest", role=Role.USER, now=clock()
        )
        assert projects.accept(s, guest, token=token[1], now=clock()).id == pid

    sent = rows(ctx)
    assert all(r.sent_at is not None and r.attempts == 1 and r.last_error is None for r in sent)

    # nothing is sent twice
    assert send() == 0
    assert len(smtp.inbox.envelopes) == 3
    assert [r.sent_at for r in rows(ctx)] == [r.sent_at for r in sent]

    # a new email is the only one sent next time
    with ctx.db.session() as s:
        notify.enqueue(
            s,
            to="late@example.org",
            subject="[Fabbrica] Late",
            body="Late news.",
            kind="test",
            now=clock(),
        )
    assert send() == 1
    assert len(smtp.inbox.envelopes) == 4
    assert smtp.inbox.envelopes[-1].rcpt_tos == ["late@example.org"]
    assert smtp.inbox.messages()[-1]["Subject"] == "[Fabbrica] Late"


def test_a_stopped_server_marks_attempts_and_the_error_and_sends_later(
    ctx: AppContext, outbox: Outbox, smtp: SmtpServer
) -> None:
    smtp.stop()
    send = sender_for(ctx, smtp)
    assert send() == 0  # and raises nothing
    failed = rows(ctx)
    assert [(r.sent_at, r.attempts) for r in failed] == [(None, 1)] * 3
    for row in failed:
        assert row.last_error is not None
        assert "refused" in row.last_error.lower()
    assert smtp.inbox.envelopes == []

    assert send() == 0
    assert [r.attempts for r in rows(ctx)] == [2, 2, 2]

    smtp.start()
    assert send() == 3
    assert len(smtp.inbox.envelopes) == 3
    assert [(r.sent_at is not None, r.attempts) for r in rows(ctx)] == [(True, 3)] * 3


def test_after_max_attempts_a_message_is_no_longer_tried(
    ctx: AppContext, clock: Clock, outbox: Outbox, smtp: SmtpServer
) -> None:
    assert MAX_ATTEMPTS == 5
    smtp.stop()
    send = sender_for(ctx, smtp)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert send() == 0
        assert [r.attempts for r in rows(ctx)] == [attempt] * 3
    errors = [r.last_error for r in rows(ctx)]
    assert send() == 0
    assert [(r.attempts, r.last_error) for r in rows(ctx)] == [(MAX_ATTEMPTS, e) for e in errors]

    smtp.start()
    assert send() == 0
    assert smtp.inbox.envelopes == []
    assert all(r.sent_at is None and r.attempts == MAX_ATTEMPTS for r in rows(ctx))

    # a message written later is still delivered
    with ctx.db.session() as s:
        notify.enqueue(
            s,
            to="later@example.org",
            subject="[Fabbrica] Later",
            body="Later news.",
            kind="test",
            now=clock() + dt.timedelta(hours=1),
        )
    assert send() == 1
    assert [e.rcpt_tos for e in smtp.inbox.envelopes] == [["later@example.org"]]


def test_a_refused_recipient_is_retried_without_holding_back_the_others(
    ctx: AppContext, outbox: Outbox, smtp: SmtpServer
) -> None:
    smtp.inbox.refuse = {GUEST_EMAIL}
    send = sender_for(ctx, smtp)
    assert send() == 2
    assert [e.rcpt_tos for e in smtp.inbox.envelopes] == [[PI_EMAIL], [PI_EMAIL]]
    submission, decision, invitation = rows(ctx)
    assert submission.sent_at is not None and decision.sent_at is not None
    assert (invitation.sent_at, invitation.attempts) == (None, 1)
    assert invitation.last_error is not None
    assert "550" in invitation.last_error
    assert "no such mailbox here" in invitation.last_error

    assert send() == 0
    assert rows(ctx)[2].attempts == 2

    smtp.inbox.refuse = set()
    assert send() == 1
    assert smtp.inbox.envelopes[-1].rcpt_tos == [GUEST_EMAIL]
    assert rows(ctx)[2].sent_at is not None


def test_nothing_pending_needs_no_server(ctx: AppContext) -> None:
    # no outbox rows: no connection is even tried (the port is closed)
    closed = SmtpServer(free_port())
    assert sender_for(ctx, closed)() == 0
    with ctx.db.session() as s:
        assert s.scalar(select(User.id).where(User.email == PI_EMAIL)) is None


@pytest.mark.parametrize("address", ["first,last@example.org", "(note)someone@example.org"])
def test_an_invitation_goes_to_exactly_the_invited_address_or_is_refused(
    ctx: AppContext, clock: Clock, outbox: Outbox, smtp: SmtpServer, address: str
) -> None:
    try:
        with ctx.db.session() as s:
            pi = s.get(User, outbox.pi_id)
            assert pi is not None
            projects.invite(s, pi, project_id=outbox.project_id, email=address, now=clock())
    except InvalidInput as err:
        assert err.field == "email"  # refusing such an address is fine too
        return
    sender_for(ctx, smtp)()
    last = rows(ctx)[-1]
    assert last.to_address == address
    assert last.sent_at is not None
    assert smtp.inbox.envelopes[-1].rcpt_tos == [address]
