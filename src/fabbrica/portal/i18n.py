"""The portal's languages: English and Italian, chosen per request from the `lang` query
parameter (the switch in the header, remembered in a cookie), then that cookie, then the
browser's `Accept-Language`. Every user-visible string of the templates and of the portal's
Python code is a gettext message (Babel catalogs under `locale/`, extracted with pybabel,
see docs/portal.md); dates and numbers are formatted for the language by Babel.

The catalogs ship as `.po` files and are compiled in memory when this module is imported,
so a fresh clone needs no build step and a compiled file can never be stale.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_date, format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import NumberPattern, format_decimal, format_percent, parse_pattern
from babel.support import NullTranslations, Translations
from starlette.requests import Request

LANGUAGES = {"en": "English", "it": "Italiano"}  # each language named in itself
DEFAULT = "en"
LANG_COOKIE = "fabbrica_lang"
LANG_PARAM = "lang"
LOCALE_DIR = Path(__file__).parent / "locale"

_current: ContextVar[str] = ContextVar("portal_language", default=DEFAULT)


def _load(language: str) -> NullTranslations:
    po = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    if not po.exists():
        return NullTranslations()
    with po.open("rb") as source:
        catalog = read_po(source, locale=language)
    compiled = BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries are left out, as msgfmt does
    compiled.seek(0)
    return Translations(compiled)


CATALOGS: dict[str, NullTranslations] = {lang: _load(lang) for lang in LANGUAGES}
LOCALES = {lang: Locale.parse(lang) for lang in LANGUAGES}  # parsed once: formats are hot


def language() -> str:
    """The language of the request being answered."""
    return _current.get()


def _(message: str) -> str:
    """`message` in the request's language (English when it has no translation)."""
    return CATALOGS[_current.get()].gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return CATALOGS[_current.get()].ngettext(singular, plural, n)


def N_(message: str) -> str:  # noqa: N802 (the name pybabel looks for)
    """Marks a message for extraction where it is defined; `_` translates it where shown."""
    return message


class RequestTranslations:
    """What `Environment.install_gettext_translations` takes: the request's catalog."""

    def gettext(self, message: str) -> str:
        return _(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return ngettext(singular, plural, n)


def _accepted(header: str) -> list[str]:
    """The languages of an `Accept-Language` header, most wanted first."""
    ranked = []
    for position, part in enumerate(header.split(",")):
        tag, _sep, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag.strip().lower()))
    return [tag for _q, _p, tag in sorted(ranked)]


def choose(request: Request) -> str:
    """The switch (`?lang=`), else its cookie, else the browser's first language we have."""
    for chosen in (request.query_params.get(LANG_PARAM), request.cookies.get(LANG_COOKIE)):
        if chosen in LANGUAGES:
            return chosen
    for tag in _accepted(request.headers.get("accept-language", "")):
        primary = tag.split("-")[0]
        if primary in LANGUAGES:
            return primary
    return DEFAULT


Scope = MutableMapping[str, Any]
Asgi = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]


class LanguageMiddleware:
    """Sets the request's language before any dependency or page code runs (a context
    variable: threads that answer the request see it too)."""

    def __init__(self, app: Asgi) -> None:
        self.app = app

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        token = _current.set(choose(Request(scope)))
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)


# Formats for the language (Babel's CLDR data): the templates' filters.


@cache
def _pattern(digits: int) -> NumberPattern:
    """A grouped number pattern with `digits` decimals, parsed once (lists format many)."""
    return parse_pattern("#,##0" + ("." + "0" * digits if digits else ""))


def number(value: float | int | None, digits: int | None = 0) -> str:
    """`value` grouped for the language; `digits` decimals (None: up to 3, as needed)."""
    if value is None:
        return ""
    if digits is None:
        return format_decimal(value, locale=LOCALES[language()])
    return str(_pattern(digits).apply(value, LOCALES[language()]))


def percent(value: float | None) -> str:
    return "" if value is None else format_percent(value, locale=LOCALES[language()])


def day(value: dt.date | dt.datetime | None) -> str:
    """A date as the language writes it (1 Dec 2026 / 1 dic 2026)."""
    if value is None:
        return ""
    return format_date(value, format="medium", locale=LOCALES[language()])


def moment(value: dt.datetime | None) -> str:
    """A date and time (UTC, as stored), minutes shown."""
    if value is None:
        return ""
    return f"{day(value)} {format_time(value, format='short', locale=LOCALES[language()])}"


# The stored words a page shows (states, decisions, organisation types, roles): marked
# here, translated where shown by the `term` filter.
TERMS = {
    "queued": N_("queued"),
    "dispatched": N_("dispatched"),
    "running": N_("running"),
    "succeeded": N_("succeeded"),
    "failed": N_("failed"),
    "cancelled": N_("cancelled"),
    "timed_out": N_("timed out"),
    "lost": N_("lost"),
    "draft": N_("draft"),
    "submitted": N_("submitted"),
    "in_review": N_("in review"),
    "accepted": N_("accepted"),
    "rejected": N_("rejected"),
    "withdrawn": N_("withdrawn"),
    "assigned": N_("assigned"),
    "conflict": N_("conflict"),
    "active": N_("active"),
    "suspended": N_("suspended"),
    "terminated": N_("terminated"),
    "expired": N_("expired"),
    "open": N_("open"),
    "closed": N_("closed"),
    "automatic": N_("automatic"),
    "manual": N_("manual"),
    "ready": N_("ready"),
    "starting": N_("starting"),
    "reconnecting": N_("reconnecting"),
    "startup": N_("startup"),
    "sme": N_("SME"),
    "large_industry": N_("large industry"),
    "academia": N_("academia"),
    "public_sector": N_("public sector"),
    "user": N_("user"),
    "operator": N_("operator"),
    "reviewer": N_("reviewer"),
    "admin": N_("admin"),
    "member": N_("member"),
    "pi": N_("PI"),
    "invited_admin": N_("invited as admin"),
    "invited_member": N_("invited as member"),
}


def term(word: str | None) -> str:
    """A stored word (a state, a type) as the reader's language says it."""
    if not word:
        return ""
    return _(TERMS[word]) if word in TERMS else word.replace("_", " ")


# The core's refusal wordings (fabbrica.core.access.REFUSAL_TEMPLATES), marked here so that
# pybabel extracts them; tests/portal/test_languages.py checks that the two stay equal.
REFUSALS = {
    "call_closed": N_("call {call} is closed; apply when it reopens"),
    "country": N_(
        "organisation country {country} is not eligible: only organisations "
        "established in an EU member state or a EuroHPC participating state may apply"
    ),
    "organisation_type": N_("{mode} does not admit {type} organisations (admits: {allowed})"),
    "months": N_("{mode} offers {offered} months, not {months}"),
    "gpu_model": N_("this factory does not offer {model} GPUs (offers: {offered})"),
    "gpu_hours_min": N_("{mode} starts at {minimum} GPU-hours; {hours} requested"),
    "gpu_hours_max": N_("{mode} grants at most {maximum} GPU-hours; {hours} requested"),
    "report_overdue": N_(
        "the final report of project {project} is overdue (due {due}); submit "
        "it before applying again"
    ),
    "declaration": N_("the declaration of civilian use and EU AI Act compliance is required"),
}


def refusal(item: Any) -> str:
    """A refusal (fabbrica.core.access.Refusal) in the reader's language: its template
    translated and filled with its values (numbers formatted for the language); a refusal
    without a template as it was said."""
    if not item.template:
        return str(item.message)
    values = {k: number(v, None) if isinstance(v, float) else str(v) for k, v in item.values}
    if "type" in values:  # organisation types, as the reader's language names them
        values["type"] = term(values["type"])
    if "allowed" in values and "type" in values:
        values["allowed"] = ", ".join(term(t) for t in values["allowed"].split(", "))
    return _(item.template).format(**values)


FILTERS: dict[str, Callable[..., str]] = {
    "refusal": refusal,
    "term": term,
    "number": number,
    "percent": percent,
    "day": day,
    "moment": moment,
}
