"""Email notifications: written to the outbox in the caller's transaction, sent later.

The control loop's `send_email` step delivers what is pending through SMTP; a message
survives a crash between the decision and the delivery, and a failed delivery is retried.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
from collections.abc import Callable
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.store.db import Database
from fabbrica.store.models import OutboxEmail
from fabbrica.store.types import utcnow

log = logging.getLogger("fabbrica.notify")
MAX_ATTEMPTS = 5


def enqueue(
    session: Session, *, to: str, subject: str, body: str, kind: str, now: dt.datetime
) -> OutboxEmail:
    email = OutboxEmail(
        to_address=to, subject=subject, body=body, kind=kind, created_at=now, attempts=0
    )
    session.add(email)
    return email


class ConsoleSender:
    """Without SMTP: writes the pending messages of some kinds (sign-in links) to the
    server's console instead, and marks them sent; the others stay in the outbox."""

    def __init__(
        self, db: Database, *, kinds: frozenset[str], write: Callable[[str], None]
    ) -> None:
        self.db = db
        self.kinds = kinds
        self.write = write

    def __call__(self) -> int:
        with self.db.session() as session:
            pending = list(
                session.scalars(
                    select(OutboxEmail)
                    .where(OutboxEmail.sent_at.is_(None), OutboxEmail.kind.in_(self.kinds))
                    .order_by(OutboxEmail.id)
                    .limit(100)
                )
            )
            for email in pending:
                self.write(f"email to {email.to_address} (no SMTP server set): {email.body}")
                email.sent_at = utcnow()
            return len(pending)


class SmtpSender:
    """Sends pending outbox messages through one SMTP server."""

    def __init__(
        self, db: Database, *, host: str, port: int, sender: str, timeout: float = 10.0
    ) -> None:
        self.db = db
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout = timeout

    def __call__(self) -> int:
        """One round: send what is pending; returns how many were sent."""
        with self.db.session() as session:
            pending = list(
                session.scalars(
                    select(OutboxEmail)
                    .where(OutboxEmail.sent_at.is_(None), OutboxEmail.attempts < MAX_ATTEMPTS)
                    .order_by(OutboxEmail.id)
                    .limit(100)
                )
            )
            if not pending:
                return 0
            sent = 0
            try:
                with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                    for email in pending:
                        sent += self._send_one(smtp, email)
            except OSError as exc:
                log.warning("SMTP %s:%s unreachable: %s", self.host, self.port, exc)
                for email in pending:
                    if email.sent_at is None:
                        email.attempts += 1
                        email.last_error = str(exc)[:1000]
            return sent

    def _send_one(self, smtp: smtplib.SMTP, email: OutboxEmail) -> int:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = email.to_address
        message["Subject"] = email.subject
        message.set_content(email.body)
        try:
            smtp.send_message(message, to_addrs=[email.to_address])
        except smtplib.SMTPException as exc:
            email.attempts += 1
            email.last_error = str(exc)[:1000]
            return 0
        email.sent_at = utcnow()
        email.attempts += 1
        return 1
