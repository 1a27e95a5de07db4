"""Wiring of the server processes: catalog, database, migrations, bootstrap, API, control loop.

`fabbrica up` runs everything in one process (the embedded default); `fabbrica serve` runs
the API only (stateless, any number of replicas) and `fabbrica controller` the control loop
(any number; one leads, through a PostgreSQL advisory lock). See docs/deploy.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.engine import make_url

from fabbrica.agent.loop import Agent
from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.backends import isolation
from fabbrica.backends.agent_link import OFFERS, AgentLink
from fabbrica.backends.local import LocalExecutor
from fabbrica.catalog.loader import load_catalog
from fabbrica.catalog.local import LOCAL_ID, emulated_federation, local_factory
from fabbrica.catalog.model import Catalog
from fabbrica.core.archives import ArchiveLimits
from fabbrica.core.executor import Executor
from fabbrica.embedded import InProcessClient
from fabbrica.portal import install_portal
from fabbrica.services import agents, datasets, identity, job_files, portal_sessions
from fabbrica.services.access.allocations import ExpiryStep
from fabbrica.services.access.calls import seed_calls
from fabbrica.services.alerts import AlertStep
from fabbrica.services.checkpoints import CheckpointSweep
from fabbrica.services.control_loop import ControlLoop, LoopStatus, Step
from fabbrica.services.dispatch import Dispatcher
from fabbrica.services.notify import ConsoleSender, SmtpSender
from fabbrica.services.oidc import Providers
from fabbrica.services.single_user import SingleUser
from fabbrica.services.templates import Templates
from fabbrica.settings import Settings
from fabbrica.store.db import Database
from fabbrica.store.leader import Leadership, setup_lock
from fabbrica.store.migrate import upgrade
from fabbrica.store.signals import OFFER, WORK, Listener, Notifier, supported
from fabbrica.store.signals import notify as notify_others
from fabbrica.store.types import utcnow

log = logging.getLogger("fabbrica")
LOCAL_AGENT_INTERVAL = 0.5  # seconds between the embedded agent's syncs

# What a process runs: everything (`fabbrica up`), the API (`fabbrica serve`), or the
# control loop and the agents of the factories that run on this machine (`fabbrica controller`)
ALL, API, CONTROLLER = "all", "api", "controller"


# How long a replica keeps an idle client connection open. Longer than the clients' own
# expiry (httpx: 5 s) and than a proxy's idle upstream connections (nginx and most load
# balancers: 60 s), so the client or the proxy always closes first: a server closing a
# connection just as a request is sent on it resets that request, and a POST cannot be
# sent twice.
KEEP_ALIVE_SECONDS = 75


@dataclass
class Prepared:
    ctx: AppContext
    settings: Settings
    bootstrap_token: str | None  # set only when a token was generated now: print it once
    admin_link: str | None = None  # the first admin's one-time portal sign-in secret
    agents: list[Agent] = field(default_factory=list)  # agents that run in this process
    not_isolated: str | None = None  # why local jobs share the server's OS user (None: they don't)
    warnings: list[str] = field(default_factory=list)  # what isolated jobs will miss here
    local_factories: frozenset[str] = frozenset()  # factories whose jobs run on this machine


def load_settings_catalog(settings: Settings) -> Catalog:
    """Validate the catalog before anything is written (raises CatalogError)."""
    return load_catalog(settings.catalog)


def prepare(settings: Settings, catalog: Catalog, role: str = ALL) -> Prepared:
    """Create the data directory and schema, and the first admin on an empty database.

    With `role` API no agent runs here (the controller runs the local factory's). Uploads
    abandoned by a crash are swept only by `fabbrica up` (ALL), the one server of its data
    directory: beside replicas, an upload may be another replica's, still in progress."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the database (SQLite) and job files
    not_isolated = isolation.unavailable()  # jobs run as fab-u<user id> when None (root)
    isolate = not_isolated is None
    if isolate:
        close_data_dir(settings.data_dir)
    executors: dict[str, Executor] = {}
    if settings.local_gpus > 0:
        catalog = catalog.with_factory(local_factory(settings.local_gpus))
    if settings.emulate_federation:
        catalog, stand_ins = emulated_federation(catalog)
        for factory_id, (partition, model, gpus) in stand_ins.items():
            executors[factory_id] = LocalExecutor(
                settings.data_dir / "emulated" / factory_id,
                gpus=gpus,
                gpu_model=model,
                name=f"emulated {factory_id}",
                partition=partition,
                isolate=isolate,
            )
    db = Database(settings.resolved_database_url())
    token = (settings.bootstrap_token or "").strip() or None
    with setup_lock(db.engine):  # replicas and controllers may start at once
        upgrade(db.engine)
        with db.session() as session:
            made = identity.bootstrap(session, now=utcnow(), token=token)
            admin = made[0] if made is not None else None
            admin_link = (
                portal_sessions.first_admin_link(session, admin, utcnow()) if admin else None
            )
            seed_calls(session, catalog, utcnow())
        if role != API and settings.local_gpus > 0:  # after bootstrap: not a user of its own
            with db.session() as session:  # two controllers starting at once make it once
                agents.ensure_agent(session, LOCAL_ID, now=utcnow())
    if isolate:
        close_data_dir(settings.data_dir)  # the database file is there now
    lease = dt.timedelta(seconds=settings.agent_lease_seconds)
    generated = made[1] if made is not None and token is None else None
    in_process = []  # after bootstrap: its agent user must not make the database look used
    if settings.local_gpus > 0:
        # The embedded factory runs its own agent, in this process: the same agent loop
        # as a site's, driving the local executor (its files stay where the API reads them).
        local = LocalExecutor(settings.data_dir / "jobs", gpus=settings.local_gpus, isolate=isolate)
        if role != API:
            client = InProcessClient(
                db,
                catalog,
                LOCAL_ID,
                utcnow,
                lease,
                server_url=local_url(settings),
                files=settings.data_dir,
            )
            in_process.append(
                Agent(
                    client,
                    local,
                    backend="local",
                    interval=LOCAL_AGENT_INTERVAL,
                    work_dir=settings.data_dir / "agent",
                    # woken by a job this process's control loop places here: at once
                    watch=lambda: OFFERS.watch(LOCAL_ID),
                )
            )
        executors[LOCAL_ID] = AgentLink(
            db, LOCAL_ID, utcnow, settings.data_dir, lease=lease, job_dirs=local.job_dir
        )
    here = frozenset(f for f, e in executors.items() if isinstance(e, LocalExecutor))
    if settings.local_gpus > 0:
        here |= {LOCAL_ID}
    single_user = SingleUser()
    if not isolate and here:
        why = f"the server cannot isolate their jobs ({not_isolated})"
        single_user = SingleUser(here, why, settings.local_user)
    ctx = AppContext(
        db=db,
        catalog=catalog,
        fixed_executors=executors,
        files=settings.data_dir,
        upload_max_bytes=settings.upload_max_bytes,
        dataset_quota_bytes=settings.dataset_quota_bytes,
        archive_limits=ArchiveLimits(
            max_entries=settings.archive_max_entries,
            max_unpacked_bytes=settings.archive_max_unpacked_bytes,
            max_ratio=settings.archive_max_ratio,
        ),
        agent_lease=lease,
        agent_wait_s=settings.agent_wait_seconds,
        single_user=single_user,
        metrics_token=(settings.metrics_token or "").strip() or None,
        metrics_cache_seconds=settings.metrics_cache_seconds,
        public_url=settings.public_url,
        notebook_idle_s=settings.notebook_idle,
        oidc=Providers.from_configs([item.config() for item in settings.oidc_providers]),
        templates=Templates(settings.templates_dir),
    )
    if role == ALL:
        with db.session() as session:  # what a crash mid-submission left behind
            swept = job_files.sweep_uploads(session, settings.data_dir)
            swept += datasets.sweep_files(session, settings.data_dir)
        if swept:
            log.warning("removed %d abandoned upload(s) from %s", len(swept), settings.data_dir)
    warnings = []
    if isolate and here:
        problems = (isolation.python_problem(), isolation.reach_problem(settings.data_dir))
        warnings = [p for p in problems if p is not None]
    return Prepared(ctx, settings, generated, admin_link, in_process, not_isolated, warnings, here)


def local_url(settings: Settings) -> str:
    """How a job on this machine reaches this server's API (over the loopback)."""
    anywhere = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
    host = anywhere.get(settings.host, settings.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"


def close_data_dir(data_dir: Path) -> None:
    """What job users may reach of the data directory: nothing but their own job
    directories. Others may pass through it (0711) but not list it; the database, uploads
    and agent files are the server's alone; `jobs/` and `emulated/` stay passable, their
    executors close each job directory to everyone but its owner."""
    data_dir.chmod(0o711)
    for name in ("uploads", "agents", "agent"):
        (data_dir / name).mkdir(mode=0o700, exist_ok=True)
    (data_dir / "emulated").mkdir(exist_ok=True)
    for child in data_dir.iterdir():
        info = child.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        if child.name in ("jobs", "emulated"):
            child.chmod(0o711)
        else:
            child.chmod(stat.S_IMODE(info.st_mode) & 0o700)


def build_app(prepared: Prepared) -> FastAPI:
    """`fabbrica up`: the API, the control loop and the local factory's agent in one
    process. On PostgreSQL its loop leads like a controller's (`build_leading_app`)."""
    ctx = prepared.ctx
    if supported(ctx.db.engine):
        return build_leading_app(prepared)

    def publish(status: LoopStatus) -> None:
        ctx.status["control_loop"] = status.state

    loop = ControlLoop(
        loop_steps(prepared.settings, ctx),
        interval=prepared.settings.loop_interval_seconds,
        clock=ctx.clock,
        on_status=publish,
    )
    ctx.wake = loop.wake  # a job submitted here is dispatched at once, not at the next tick

    stop = threading.Event()
    threads = [
        threading.Thread(target=agent.run, args=(stop,), name=f"agent {agent.backend}", daemon=True)
        for agent in prepared.agents
    ]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for agent in prepared.agents:
            # before the control loop: runs that went on while the server was down are
            # reported (and their leases renewed) before anyone looks at those leases
            agent.adopt()
            agent.round()
        for thread in threads:
            thread.start()
        loop.start()
        try:
            yield
        finally:
            loop.stop()
            stop.set()
            for thread in threads:
                thread.join(10)
            ctx.db.dispose()

    app = create_app(ctx, lifespan=lifespan, max_body_bytes=prepared.settings.max_request_bytes)
    install_portal(app)
    return app


def build_leading_app(prepared: Prepared) -> FastAPI:
    """`fabbrica up` on PostgreSQL: the API, and a `Controller` in a thread, which runs the
    loop and the local agents only while it holds the leader lock (beside other
    controllers, or another `fabbrica up`, on the same database, one leads)."""
    ctx = prepared.ctx

    def publish(status: LoopStatus) -> None:
        ctx.status["control_loop"] = status.state

    controller = Controller(prepared, on_status=publish)
    ctx.wake = controller.wake.set  # a job submitted here: a round now (when leading)
    ctx.status["control_loop"] = "standing by"
    stop = threading.Event()
    thread = threading.Thread(target=controller.run, args=(stop,), name="controller", daemon=True)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        thread.start()
        try:
            yield
        finally:
            stop.set()
            controller.wake.set()
            thread.join(20)
            ctx.db.dispose()

    app = create_app(ctx, lifespan=lifespan, max_body_bytes=prepared.settings.max_request_bytes)
    install_portal(app)
    return app


def build_api(prepared: Prepared) -> FastAPI:
    """`fabbrica serve`: the API and the portal, holding no state of their own; the control
    loop runs in `fabbrica controller`."""
    ctx = prepared.ctx
    ctx.status["control_loop"] = "separate"  # GET /health: not in this process

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        notifier, listener = None, None
        if supported(ctx.db.engine):
            # a submission here wakes the leading controller (another process), and its
            # offers wake the agents' syncs held here (store.signals)
            notifier = Notifier(ctx.db.engine)
            ctx.wake = partial(notifier.send, WORK)
            listener = Listener(ctx.db.url, {OFFER: offered}).start()
        try:
            yield
        finally:
            if listener is not None:
                listener.stop()
            if notifier is not None:
                notifier.close()
            ctx.db.dispose()

    app = create_app(ctx, lifespan=lifespan, max_body_bytes=prepared.settings.max_request_bytes)
    install_portal(app)
    return app


def worker_api() -> FastAPI:
    """The API of one worker process of `fabbrica serve --workers N` (uvicorn calls it by
    name in each worker): the settings from the environment, which the parent process set
    from its own; the parent migrated the schema and made the first admin already."""
    settings = Settings()
    return build_api(prepare(settings, load_settings_catalog(settings), API))


def offered(factory_id: str) -> None:
    """A controller placed work on `factory_id` (a notification): wake its agent's held
    sync. When the listener (re)connects (empty payload), what was sent while it was away
    is unknown: every held sync is woken once and checks the database again."""
    if factory_id:
        OFFERS.notify(factory_id, publish=False)
    else:
        OFFERS.wake_all()


class Controller:
    """`fabbrica controller`: the control loop, and the agents of the factories that run on
    this machine, while this process leads (a PostgreSQL advisory lock, held on a connection
    of its own). The others check the lock every interval and take over when it is free:
    the leader died, or its connection did. A leader whose connection fails stops acting at
    once (its lock may already be another's) and tries again like the others."""

    def __init__(
        self,
        prepared: Prepared,
        leadership: Leadership | None = None,
        on_status: Callable[[LoopStatus], None] | None = None,
    ) -> None:
        self.prepared = prepared
        ctx = prepared.ctx
        self.leadership = leadership or Leadership(ctx.db.url)
        self.interval = prepared.settings.loop_interval_seconds
        self.loop = ControlLoop(
            loop_steps(prepared.settings, ctx),
            interval=self.interval,
            clock=ctx.clock,
            on_status=on_status,
        )
        self._on_status = on_status
        self.terms = 0  # how many times this process took the lead
        self.wake = threading.Event()  # a replica stored a submission: a round now
        self._agents_stop: threading.Event | None = None
        self._threads: list[threading.Thread] = []

    @property
    def leading(self) -> bool:
        return self._agents_stop is not None

    def run(self, stop: threading.Event) -> None:
        """Lead or wait, every interval, until `stop` is set; then give the lead up. The
        leader also runs a round as soon as a replica notifies a submission (WORK)."""
        listener = None
        if supported(self.prepared.ctx.db.engine):
            listener = Listener(self.prepared.ctx.db.url, {WORK: lambda _: self.wake.set()})
            listener.start()
        try:
            while not stop.is_set():
                self.wake.clear()  # a wake during the round still counts: cleared before it
                if self.step():
                    self._wait(stop)
                else:
                    stop.wait(self.interval)
        finally:
            if listener is not None:
                listener.stop()
            self._follow()
            self.leadership.dispose()
            self.prepared.ctx.db.dispose()

    def _wait(self, stop: threading.Event) -> None:
        """Until the interval ends, a wake, or `stop` (checked every 0.25 s)."""
        deadline = time.monotonic() + self.interval
        while not stop.is_set() and not self.wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.wake.wait(min(left, 0.25))

    def step(self) -> bool:
        """One round: when this process leads (still, or from now), one tick of the loop."""
        if self.leadership.hold():
            if not self.leading:
                self._lead()
            self.loop.tick()
            return True
        if self.leading:
            self._follow()
        return False

    def _lead(self) -> None:
        self.terms += 1
        log.info("leading: this controller runs the control loop (term %d)", self.terms)
        self.loop.status.state = "running"  # published by its next tick
        for agent in self.prepared.agents:
            agent.failures = 0  # no backoff left over from the last term
            try:  # as in `fabbrica up`: runs seen (leases renewed) before the loop looks
                agent.adopt()
                agent.round()
            except Exception:  # the database may be away again: the agent's loop retries
                log.exception("agent %s: first round of the term failed", agent.backend)
        self._agents_stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=agent.run,
                args=(self._agents_stop,),
                name=f"agent {agent.backend}",
                daemon=True,
            )
            for agent in self.prepared.agents
        ]
        for thread in self._threads:
            thread.start()

    def _follow(self) -> None:
        if self._agents_stop is None:
            return
        log.warning("standing by: this controller no longer leads")
        self.loop.status.state = "standing by"
        if self._on_status is not None:
            self._on_status(self.loop.status)
        self._agents_stop.set()
        for thread in self._threads:
            thread.join(10)
        self._agents_stop, self._threads = None, []
        self.leadership.release()


def loop_steps(settings: Settings, ctx: AppContext) -> dict[str, Step]:
    """The control loop's work: jobs (poll, then dispatch), allocation expiry, budget
    alerts and operators' digests, and email when SMTP is set (last: it sends what the
    steps before it wrote in the same tick)."""
    dispatcher = Dispatcher(
        ctx.db, ctx.catalog, ctx.executors, ctx.clock, single_user=ctx.single_user
    )
    steps: dict[str, Step] = {
        "jobs": dispatcher.step,
        "offers": partial(publish_offers, ctx.db),  # after jobs: what it placed, committed
        "expiry": ExpiryStep(ctx.db, ctx.clock),
        "alerts": AlertStep(ctx.db, ctx.clock),  # after jobs: the usage they were charged
        "checkpoints": CheckpointSweep(  # of the jobs that are over
            ctx.db, ctx.files, ctx.clock, dt.timedelta(days=settings.checkpoint_keep_days)
        ),
    }
    if settings.smtp_host:
        steps["email"] = SmtpSender(
            ctx.db, host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_from
        )
    else:
        log.warning(
            "FABBRICA_SMTP_HOST is not set: sign-in links are printed here, other email "
            "stays in the outbox, unsent"
        )
        steps["email"] = ConsoleSender(
            ctx.db, kinds=frozenset({portal_sessions.SIGN_IN_KIND}), write=log.warning
        )
    return steps


def publish_offers(db: Database) -> int:
    """Wake, now that the loop's transaction is committed, the agents the loop offered work
    to: in this process, and on PostgreSQL in the others (the replicas holding their syncs)."""
    pending = OFFERS.take_pending()
    for factory_id in pending:
        OFFERS.notify(factory_id, publish=False)
    notify_others(db.engine, OFFER, pending)
    return len(pending)


def describe_database(url: str) -> str:
    """The database URL without its password, for banners and logs."""
    return make_url(url).render_as_string(hide_password=True)
