"""The catalog, users and tokens, organisations, projects, calls, proposals, allocations,
reports and site agents: one method per operation of the CLI."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from fabbrica.client._http import Http
from fabbrica.client.types import (
    Agent,
    AgentToken,
    Allocation,
    AuditEntry,
    Call,
    Factory,
    FactoryDetail,
    Health,
    Invitation,
    Notice,
    Organisation,
    OrganisationDetail,
    Project,
    Proposal,
    Sector,
    SiteUsername,
    Token,
    TokenCreated,
    User,
    UserCreated,
)


class CatalogApi(Http):
    def health(self) -> Health:
        """The server's status, version, database and control loop (needs no token)."""
        return cast(Health, self._get("/health"))

    def factories(self) -> list[Factory]:
        """The factories of the federation: id, country, systems, GPUs."""
        return cast(list[Factory], self._get("/factories"))

    def factory(self, factory_id: str) -> FactoryDetail:
        """One factory with its systems and partitions."""
        return cast(FactoryDetail, self._get(f"/factories/{factory_id}"))

    def access_modes(self) -> list[dict[str, Any]]:
        """The access modes (playground, fast lane, ...) with their rules."""
        return cast(list[dict[str, Any]], self._get("/access-modes"))

    def sectors(self) -> list[Sector]:
        """The sectors an organisation may name."""
        return cast(list[Sector], self._get("/sectors"))


class IdentityApi(Http):
    def me(self) -> User:
        """The user the token belongs to."""
        return cast(User, self._get("/me"))

    def create_user(
        self, email: str, name: str, role: str = "user", *, factories: Sequence[str] = ()
    ) -> UserCreated:
        """Create a user (admins); the answer holds their first token, shown only here.
        An operator operates only the `factories` named (catalog ids)."""
        body: dict[str, Any] = {"email": email, "name": name, "role": role}
        if factories:
            body["factories"] = list(factories)
        return cast(UserCreated, self._post("/users", body))

    def set_user_factories(self, user_id: int, factories: Sequence[str]) -> User:
        """Set the factories an operator operates (admins); replaces the list (empty: none)."""
        body = {"factories": list(factories)}
        return cast(User, self._put(f"/users/{user_id}/factories", body))

    def suspend_user(self, user_id: int, reason: str) -> User:
        """Suspend a user (admins): refused at their next request, whatever they hold."""
        return cast(User, self._post(f"/users/{user_id}/suspend", {"reason": reason}))

    def reactivate_user(self, user_id: int, reason: str) -> User:
        """Let a suspended user back in (admins)."""
        return cast(User, self._post(f"/users/{user_id}/reactivate", {"reason": reason}))

    def users(self) -> list[User]:
        """Every user (admins)."""
        return cast(list[User], self._get("/users"))

    def create_token(
        self, name: str = "cli", *, user_id: int | None = None, expires_in_days: int | None = None
    ) -> TokenCreated:
        """Create an API token (admins: for `user_id`); its secret is in `token`, once."""
        body = {"name": name, "user_id": user_id, "expires_in_days": expires_in_days}
        return cast(TokenCreated, self._post("/tokens", body))

    def tokens(self, user_id: int | None = None) -> list[Token]:
        """Your tokens (admins: another user's, or every user's with `user_id=0`)."""
        return cast(list[Token], self._get("/tokens", user_id=user_id))

    def revoke_token(self, token_id: int) -> Token:
        """Revoke a token at once."""
        return cast(Token, self._delete(f"/tokens/{token_id}"))


class AccessApi(Http):
    # --- organisations -------------------------------------------------------------------

    def create_organisation(
        self, name: str, *, country: str, type: str, sector: str | None = None
    ) -> Organisation:
        """Create an organisation (`type`: startup, sme, large_industry, academia or
        public_sector; `country`: ISO alpha-2); you become its first admin."""
        body = {"name": name, "country": country, "type": type, "sector": sector}
        return cast(Organisation, self._post("/organisations", body))

    def organisations(self) -> list[Organisation]:
        """Your organisations."""
        return cast(list[Organisation], self._get("/organisations"))

    def organisation(self, org_id: int) -> OrganisationDetail:
        """One organisation with its members."""
        return cast(OrganisationDetail, self._get(f"/organisations/{org_id}"))

    def add_organisation_member(
        self, org_id: int, email: str, *, admin: bool = False
    ) -> OrganisationDetail:
        """Add a registered user to your organisation (admins); they then join it."""
        body = {"email": email, "admin": admin}
        return cast(OrganisationDetail, self._post(f"/organisations/{org_id}/members", body))

    def join_organisation(self, org_id: int) -> OrganisationDetail:
        """Join an organisation whose admin added you."""
        return cast(OrganisationDetail, self._post(f"/organisations/{org_id}/join"))

    # --- projects ------------------------------------------------------------------------

    def create_project(self, title: str, *, org_id: int, mode: str | None = None) -> Project:
        """Create a project of an organisation (mode default: playground); you become its PI."""
        body = {"title": title, "org_id": org_id, "mode": mode}
        return cast(Project, self._post("/projects", body))

    def projects(self, org_id: int | None = None) -> list[Project]:
        """Your projects (one organisation's with `org_id`)."""
        return cast(list[Project], self._get("/projects", org_id=org_id))

    def project(self, project_id: str) -> Project:
        """One project with its members."""
        return cast(Project, self._get(f"/projects/{project_id}"))

    def invite(self, project_id: str, email: str) -> Invitation:
        """Invite someone by email to a project (PI); they accept with the invitation token."""
        return cast(Invitation, self._post(f"/projects/{project_id}/invitations", {"email": email}))

    def accept_invitation(self, token: str) -> Project:
        """Accept an invitation sent to your email."""
        return cast(Project, self._post("/invitations/accept", {"token": token}))

    def remove_member(self, project_id: str, user_id: int) -> Project:
        """Remove a member from a project (PI)."""
        return cast(Project, self._delete(f"/projects/{project_id}/members/{user_id}"))

    def transfer_pi(self, project_id: str, user_id: int) -> Project:
        """Hand the PI role to a member (PI)."""
        return cast(Project, self._post(f"/projects/{project_id}/pi", {"user_id": user_id}))

    # --- calls ---------------------------------------------------------------------------

    def calls(
        self,
        *,
        state: str = "open",
        factory: str | None = None,
        mode: str | None = None,
    ) -> list[Call]:
        """The open calls (`state="all"`: closed ones too), of a factory or an access mode."""
        return cast(list[Call], self._get("/calls", state=state, factory=factory, mode=mode))

    def call(self, call_id: str) -> Call:
        """One call."""
        return cast(Call, self._get(f"/calls/{call_id}"))

    def update_call(
        self,
        call_id: str,
        *,
        open: bool | None = None,
        decision: str | None = None,
        offered_gpu_hours: float | None = None,
        min_reviews: int | None = None,
        min_average_score: float | None = None,
        reason: str | None = None,
    ) -> Call:
        """Change a call (operators): open or close it, its `decision` ("automatic" or
        "manual"), capacity and review thresholds. Only the arguments given change."""
        body: dict[str, Any] = {
            "state": None if open is None else ("open" if open else "closed"),
            "decision": decision,
            "offered_gpu_hours": offered_gpu_hours,
            "min_reviews": min_reviews,
            "min_average_score": min_average_score,
            "reason": reason,
        }
        return cast(Call, self._patch(f"/calls/{call_id}", body))

    def add_call_reviewer(self, call_id: str, user_id: int) -> Call:
        """Add a reviewer to a call's round-robin pool (operators)."""
        return cast(Call, self._post(f"/calls/{call_id}/reviewers", {"user_id": user_id}))

    # --- proposals -----------------------------------------------------------------------

    def apply(
        self,
        *,
        project: str,
        call: str,
        gpu_hours: float,
        months: int,
        declare_civilian_ai_act: bool,
        gpu_model: str | None = None,
        abstract: str = "",
    ) -> Proposal:
        """Apply to a call. `declare_civilian_ai_act=True` makes the declaration of civilian
        use and EU AI Act compliance (`fabbrica.core.access.DECLARATION`), which the API
        requires. Playground and Fast Lane proposals come back decided."""
        body = {
            "project_id": project,
            "call_id": call,
            "gpu_hours": gpu_hours,
            "months": months,
            "gpu_model": gpu_model,
            "abstract": abstract,
            "declare_civilian_ai_act": declare_civilian_ai_act,
        }
        return cast(Proposal, self._post("/proposals", body))

    def proposals(
        self, *, project_id: str | None = None, state: str | None = None
    ) -> list[Proposal]:
        """Proposals: yours (staff: all), of one project or in one state."""
        return cast(list[Proposal], self._get("/proposals", project_id=project_id, state=state))

    def proposal(self, proposal_id: int) -> Proposal:
        """One proposal with its reviews and allocation."""
        return cast(Proposal, self._get(f"/proposals/{proposal_id}"))

    def withdraw(self, proposal_id: int) -> Proposal:
        """Withdraw a proposal that is not decided yet (PI)."""
        return cast(Proposal, self._post(f"/proposals/{proposal_id}/withdraw"))

    def review(
        self,
        proposal_id: int,
        *,
        score: int | None = None,
        comment: str | None = None,
        conflict: str | None = None,
    ) -> Proposal:
        """Review a proposal (reviewers): a score 1..5 and a comment for the applicant, or
        a declared conflict of interest instead."""
        body = {"score": score, "comment": comment, "conflict": conflict}
        return cast(Proposal, self._post(f"/proposals/{proposal_id}/reviews", body))

    def assign_reviewer(self, proposal_id: int, reviewer_id: int) -> Proposal:
        """Assign a reviewer to a proposal (operators)."""
        body = {"reviewer_id": reviewer_id}
        return cast(Proposal, self._post(f"/proposals/{proposal_id}/reviewers", body))

    def decide(
        self,
        proposal_id: int,
        decision: str,
        *,
        gpu_hours: float | None = None,
        reason: str | None = None,
    ) -> Proposal:
        """Accept (perhaps granting fewer `gpu_hours`) or reject (a `reason` is required)
        a proposal (operators)."""
        body = {"decision": decision, "gpu_hours": gpu_hours, "reason": reason}
        return cast(Proposal, self._post(f"/proposals/{proposal_id}/decision", body))

    # --- allocations ---------------------------------------------------------------------

    def allocations(self, project_id: str | None = None) -> list[Allocation]:
        """Allocations: GPU-hours granted, used and reserved, validity, state."""
        return cast(list[Allocation], self._get("/allocations", project_id=project_id))

    def allocation(self, allocation_id: int) -> Allocation:
        """One allocation."""
        return cast(Allocation, self._get(f"/allocations/{allocation_id}"))

    def notices(self, limit: int = 50) -> list[Notice]:
        """Budget alerts of your projects' allocations, newest first (the emails' notices)."""
        return cast(list[Notice], self._get("/notices", limit=limit))

    def change_allocation(
        self,
        allocation_id: int,
        action: str,
        *,
        reason: str,
        months: int | None = None,
        until: dt.datetime | None = None,
        gpu_hours: float | None = None,
    ) -> Allocation:
        """Change an allocation (operators): `extend` (by `months` or to `until`; a naive
        datetime is taken as UTC), `top_up` (by `gpu_hours`), `suspend`, `resume` or
        `terminate`. The `reason` is kept in the audit log."""
        body: dict[str, Any] = {
            "action": action,
            "reason": reason,
            "months": months,
            "gpu_hours": gpu_hours,
        }
        if until is not None:
            body["until"] = (until if until.tzinfo else until.replace(tzinfo=dt.UTC)).isoformat()
        return cast(Allocation, self._post(f"/allocations/{allocation_id}/changes", body))

    def submit_final_report(self, allocation_id: int, text: str) -> Allocation:
        """Submit an allocation's final report (PI), due within 3 months of its end."""
        body = {"text": text}
        return cast(Allocation, self._post(f"/allocations/{allocation_id}/final-report", body))

    def allocation_audit(self, allocation_id: int) -> list[AuditEntry]:
        """Every change of an allocation: who, when, what, why."""
        return cast(list[AuditEntry], self._get(f"/allocations/{allocation_id}/audit"))

    # --- reports and agents --------------------------------------------------------------

    def access_report(self) -> dict[str, Any]:
        """Proposals by mode, state, country, organisation type and sector, and the time
        from submission to decision (operators and the federation office)."""
        return cast(dict[str, Any], self._get("/reports/access"))

    def federation_report(
        self,
        *,
        start: dt.date | None = None,
        end: dt.date | None = None,
        factory: str | None = None,
    ) -> dict[str, Any]:
        """The federation report over the days [start, end) in UTC (default: the last full
        month): GPU-hours granted and used by member state, factory, sector, organisation
        type and access mode; decision times; utilisation; EU versus national access
        (operators: their factories; federation admins: all). docs/reporting.md."""
        params = {
            "from": None if start is None else start.isoformat(),
            "to": None if end is None else end.isoformat(),
            "factory": factory,
        }
        return cast(dict[str, Any], self._get("/reports/federation", **params))

    def agents(self) -> list[Agent]:
        """Every factory's site agent: backend, last sync and the capacity it reported."""
        return cast(list[Agent], self._get("/agents"))

    def create_agent_token(self, factory_id: str) -> AgentToken:
        """A token for a factory's site agent (admins, operators); shown only here."""
        return cast(AgentToken, self._post(f"/agents/{factory_id}/token"))

    def set_site_username(self, factory_id: str, *, email: str, username: str) -> SiteUsername:
        """Map a user to their username at a factory: their jobs run as it there."""
        body = {"email": email, "username": username}
        return cast(SiteUsername, self._put(f"/agents/{factory_id}/usernames", body))
