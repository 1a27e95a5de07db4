"""Usage over time: the GPU-hours charged to a member's allocations, per day or per week
(weeks start on Monday, UTC), from the usage records."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.core.errors import InvalidInput
from fabbrica.services.access.visibility import member_project_pks
from fabbrica.store.models import Allocation, UsageRecord, User

BUCKETS = ("day", "week")
MAX_BUCKETS = 366


@dataclass(frozen=True)
class Point:
    start: dt.date  # the bucket's first day
    gpu_hours: float


def bucket_start(day: dt.date, bucket: str) -> dt.date:
    return day - dt.timedelta(days=day.weekday()) if bucket == "week" else day


def usage_over_time(
    session: Session, user: User, *, now: dt.datetime, bucket: str = "week", count: int = 12
) -> list[Point]:
    """The GPU-hours charged to the allocations of `user`'s projects in each of the last
    `count` days or weeks, the current one included, oldest first (empty buckets as 0)."""
    if bucket not in BUCKETS:
        raise InvalidInput(f"bucket is one of: {', '.join(BUCKETS)}", field="bucket")
    if not 1 <= count <= MAX_BUCKETS:
        raise InvalidInput(f"count is 1 to {MAX_BUCKETS}", field="count")
    step = dt.timedelta(days=7 if bucket == "week" else 1)
    last = bucket_start(now.astimezone(dt.UTC).date(), bucket)
    first = last - step * (count - 1)
    since = dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC)
    rows = session.execute(
        select(UsageRecord.created_at, UsageRecord.gpu_hours)
        .join(Allocation, Allocation.id == UsageRecord.allocation_id)
        .where(
            UsageRecord.created_at >= since,
            Allocation.project_pk.in_(member_project_pks(user)),
        )
    ).all()
    sums = {first + step * n: 0.0 for n in range(count)}
    for created, hours in rows:
        moment = created if created.tzinfo else created.replace(tzinfo=dt.UTC)
        key = bucket_start(moment.astimezone(dt.UTC).date(), bucket)
        if key in sums:
            sums[key] += float(hours or 0)
    return [Point(day, hours) for day, hours in sorted(sums.items())]
