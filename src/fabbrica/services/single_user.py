"""Factories whose jobs cannot be isolated from each other run the jobs of one user only.

When `fabbrica up` is not root, the `local` factory and the emulated ones run every job as
the server's own OS user: a job could read the database, the data directory and every
other job's files. Such a factory then runs the jobs of a single Fabbrica user, its
holder, decided by a fixed rule:

1. `FABBRICA_LOCAL_USER` (an email), when set, names the holder;
2. otherwise the holder is the PI of the project whose live allocation at the factory is
   the oldest one (the lowest allocation id among those in force).

Anyone else's job is refused there: at submission (422) when the factory was its only
place to run, and at dispatch (it is never placed there) otherwise.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.services.access.allocations import in_force
from fabbrica.store.models import Allocation, User


@dataclass(frozen=True)
class SingleUser:
    """Which factories run one user's jobs only, and why."""

    factories: frozenset[str] = frozenset()
    why: str = "this server cannot isolate jobs from each other"  # e.g. "it runs as bob"
    user_email: str | None = None  # FABBRICA_LOCAL_USER

    def holder(self, session: Session, factory: str, now: dt.datetime) -> tuple[int | None, str]:
        """The id of the user whose jobs `factory` runs now (None: nobody's), and who
        that is, in words."""
        if self.user_email:
            email = self.user_email.strip().lower()
            user = session.scalar(select(User).where(User.email == email))
            if user is None:
                return None, f"FABBRICA_LOCAL_USER names {email}, who has no account here"
            return user.id, f"FABBRICA_LOCAL_USER gives it to {email}"
        oldest = session.scalar(
            in_force(now).where(Allocation.factory_id == factory).order_by(Allocation.id).limit(1)
        )
        if oldest is None:
            return None, "no project holds a live allocation there"
        project = oldest.project
        return (
            project.pi_user_id,
            f"it is held by {project.pi.email}, PI of project {project.id}, whose allocation "
            f"{oldest.id} is the oldest live one there",
        )

    def refused(self, session: Session, user_id: int, now: dt.datetime) -> dict[str, str]:
        """Factories that may not run `user_id`'s jobs now, each with the reason."""
        refused = {}
        for factory in sorted(self.factories):
            holder, who = self.holder(session, factory, now)
            if holder is not None and holder == user_id:
                continue
            if holder is None and not self.user_email:
                continue  # nobody holds it: nobody can run there anyway (no allocation)
            refused[factory] = (
                f"{factory} runs the jobs of one user only, because {self.why}: {who}"
            )
        return refused
