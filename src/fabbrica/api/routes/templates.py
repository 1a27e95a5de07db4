"""Job templates: list, show, render (the spec, for a form to show), and submit a job made
from one (its folder is the workdir). Every signed-in user sees the same templates."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from fabbrica.api.deps import CatalogDep, ContextDep, CurrentUser, SessionDep
from fabbrica.api.routes.jobs import job_public
from fabbrica.api.schemas_jobs import JobPublic
from fabbrica.core.templates import Template, describe
from fabbrica.services import submission
from fabbrica.services.templates import workdir_archive

router = APIRouter(tags=["templates"])
TemplateName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="a name")]


class ParameterPublic(BaseModel):
    name: str
    type: str
    description: str
    default: int | float | bool | str | None
    required: bool
    min: float | None
    max: float | None
    choices: list[str] | None
    summary: str  # type, default or required, limits: one line


class TemplatePublic(BaseModel):
    name: str
    description: str
    parameters: list[ParameterPublic]


class TemplateRender(BaseModel):
    """Parameters as text (as `--set name=value` gives them) or typed JSON values."""

    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, int | float | bool | str] = Field(default_factory=dict, max_length=64)
    project: str | None = Field(default=None, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
    datasets: list[Annotated[str, Field(max_length=80)]] = Field(
        default_factory=list, max_length=32
    )


class Rendered(BaseModel):
    template: str
    values: dict[str, Any]
    spec: dict[str, Any]


def template_public(template: Template) -> TemplatePublic:
    return TemplatePublic(
        name=template.name,
        description=template.description,
        parameters=[
            ParameterPublic(
                name=name,
                type=p.type,
                description=p.description,
                default=p.default,
                required=p.required,
                min=p.min,
                max=p.max,
                choices=list(p.choices) if p.choices else None,
                summary=describe(p),
            )
            for name, p in template.parameters.items()
        ],
    )


@router.get("/templates", response_model=list[TemplatePublic])
def list_templates(ctx: ContextDep, actor: CurrentUser) -> list[TemplatePublic]:
    """The job templates: those shipped with Fabbrica and the operator's (`templates_dir`)."""
    return [template_public(f.template) for f in ctx.templates.listed()]


@router.get("/templates/{name}", response_model=TemplatePublic)
def show_template(name: TemplateName, ctx: ContextDep, actor: CurrentUser) -> TemplatePublic:
    """One template with its parameters (type, default or required, limits)."""
    return template_public(ctx.templates.named(name).template)


@router.post("/templates/{name}/spec", response_model=Rendered)
def render_template(
    name: TemplateName, body: TemplateRender, ctx: ContextDep, actor: CurrentUser
) -> Rendered:
    """The job spec the template makes with these parameters; 422 names the parameter
    (`parameters.<name>`). Nothing is submitted."""
    rendered, found = ctx.templates.render_job(
        name, body.parameters, project=body.project, datasets=tuple(body.datasets)
    )
    spec = rendered.spec.model_dump(mode="json", exclude_defaults=True)
    return Rendered(template=found.template.name, values=rendered.values, spec=spec)


@router.post(
    "/templates/{name}/jobs", response_model=JobPublic, status_code=status.HTTP_201_CREATED
)
async def submit_template(
    name: TemplateName,
    body: TemplateRender,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    catalog: CatalogDep,
) -> JobPublic:
    """Submit a job made from the template: its spec rendered with these parameters, its
    folder as the workdir. 422 names the parameter, and nothing is queued."""

    def work() -> JobPublic:
        rendered, found = ctx.templates.render_job(
            name, body.parameters, project=body.project, datasets=tuple(body.datasets)
        )
        return submission.submit_and_commit(
            session,
            actor,
            catalog,
            rendered.spec,
            project_id=body.project,
            archive=workdir_archive(found),
            files=ctx.files,
            limits=ctx.archive_limits,
            connected=ctx.executors.connected(session),
            single_user=ctx.single_user,
            now=ctx.clock(),
            present=job_public,
        )

    public = await run_in_threadpool(work)
    ctx.wake()
    return public
