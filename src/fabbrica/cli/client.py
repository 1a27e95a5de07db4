"""The CLI's connection to the API, a `fabbrica.Client`, and the one place where the SDK's
errors become CliErrors (exit 2 for bad input, 1 for failures)."""

from __future__ import annotations

from fabbrica.cli.errors import BAD_INPUT, FAILURE, CliError
from fabbrica.client import ApiError, Client, ClientError, ConnectError, JobSpecError, NoTokenError

# Statuses that mean "your request was wrong" (exit 2) rather than "it failed" (exit 1).
BAD_INPUT_STATUSES = {400, 404, 409, 413, 415, 422}


def client() -> Client:
    """A client for FABBRICA_URL / FABBRICA_TOKEN, or what `fabbrica login` saved."""
    return Client()


def cli_error(exc: ClientError) -> CliError:
    """The message and exit code `fabbrica` shows for an SDK error."""
    if isinstance(exc, ApiError):
        return CliError(str(exc), BAD_INPUT if exc.status in BAD_INPUT_STATUSES else FAILURE)
    if isinstance(exc, ConnectError):
        return CliError(
            f"{exc.message}; is `fabbrica up` running there? Set FABBRICA_URL or run "
            "`fabbrica login --url`."
        )
    if isinstance(exc, NoTokenError):
        return CliError("no API token: set FABBRICA_TOKEN or run `fabbrica login`", BAD_INPUT)
    if isinstance(exc, JobSpecError):
        return CliError(exc.message, BAD_INPUT)
    return CliError(exc.message)
