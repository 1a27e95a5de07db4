"""`Client`: every operation of the `fabbrica` CLI as a typed method."""

from __future__ import annotations

from fabbrica.client._access import AccessApi, CatalogApi, IdentityApi
from fabbrica.client._datasets import DatasetsApi
from fabbrica.client._jobs import JobsApi
from fabbrica.client._models import ModelsApi
from fabbrica.client._notebooks import NotebooksApi
from fabbrica.client._templates import TemplatesApi


class Client(
    CatalogApi,
    IdentityApi,
    AccessApi,
    JobsApi,
    DatasetsApi,
    ModelsApi,
    NotebooksApi,
    TemplatesApi,
):
    """A connection to a Fabbrica API.

    ```python
    from fabbrica import Client

    with Client() as fab:  # FABBRICA_URL / FABBRICA_TOKEN, or what `fabbrica login` saved
        job = fab.submit("examples/digits/job.yaml")
        job = fab.wait(job["id"])
        print(fab.logs(job["id"]))
        fab.download(job["id"], "digits-out")
    ```

    `url` is the server's base URL (without /api/v1) and `token` an API token; each, when
    not given, comes from FABBRICA_URL / FABBRICA_TOKEN, then from the config file that
    `fabbrica login` writes (`fabbrica.client.config_path()`); the URL defaults to
    http://127.0.0.1:8000. `timeout` is the seconds a single request may take.

    Answers are plain dicts and lists (typed as TypedDicts, see `fabbrica.client.types`).
    Failures raise `fabbrica.ClientError` subclasses: `ApiError` (the API said no: `status`,
    `code`, `field`, `message`), `ConnectError` (no answer), `NoTokenError`, `ConfigError`,
    `JobSpecError` (a spec refused before sending). A client is not thread-safe to close
    while in use; use one per thread, and close it (or use `with`).
    """
