"""The portal in English and Italian: the catalog holds every message the templates and
the portal's code mark, each with an Italian translation; the language comes from the
switch (remembered in a cookie) or Accept-Language; an Italian page of every role shows
no English message of the catalog, and numbers and dates in the Italian way."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

import fabbrica.portal
from fabbrica.core.access import REFUSAL_TEMPLATES
from fabbrica.portal.i18n import REFUSALS
from tests.portal.test_roles import World, portal, world

__all__ = ["portal", "world"]  # fixtures, used by name
PORTAL = Path(fabbrica.portal.__file__).parent
ITALIAN = PORTAL / "locale" / "it" / "LC_MESSAGES" / "messages.po"
IT = {"Accept-Language": "it-IT,it;q=0.9,en;q=0.5"}


def _catalog() -> dict[str, tuple[str, ...]]:
    with ITALIAN.open("rb") as source:
        catalog = read_po(source, locale="it")
    found = {}
    for message in catalog:
        if message.id:
            key = message.id if isinstance(message.id, str) else message.id[0]
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            assert all(isinstance(s, str) for s in strings), key
            assert not message.fuzzy, key
            found[key] = tuple(str(s or "") for s in strings)
    return found


def test_every_marked_message_is_in_the_catalog_with_an_italian_translation() -> None:
    marked = set()
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    for _file, _line, message, _comments, _context in extract_from_dir(
        PORTAL, method_map, options, keywords=keywords
    ):
        marked.add(message if isinstance(message, str) else message[0])
    catalog = _catalog()
    assert len(marked) > 300
    assert marked == set(catalog), "run pybabel extract/update (docs/portal.md, Languages)"
    untranslated = [key for key, strings in catalog.items() if not all(s.strip() for s in strings)]
    assert untranslated == []


def test_the_cores_refusals_are_all_marked_and_keep_their_places_in_italian() -> None:
    assert REFUSALS == REFUSAL_TEMPLATES  # each wording the core refuses with is translated
    places = re.compile(r"\{(\w+)\}")
    for english, (italian, *_) in _catalog().items():
        assert sorted(places.findall(italian)) == sorted(places.findall(english)), english


class _Text(HTMLParser):
    """A page's visible text and the names given to its controls (aria-label, title)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        self.parts += [value for name, value in attrs if name in ("aria-label", "title") and value]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip -= 1

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def english_left(html: str) -> list[str]:
    """The catalog's English messages (those Italian says otherwise) found in `html`.

    A message of several words counts anywhere in the text; a single word only as a whole
    text node (a label, a heading, a cell), since the catalog's data (a GPU model
    "unknown", the access mode "AI for Science") is English too."""
    parser = _Text()
    parser.feed(html)
    text = " ".join(" ".join(parser.parts).split())
    nodes = {" ".join(part.split()) for part in parser.parts}
    left = []
    for key, strings in _catalog().items():
        english = key.replace("%%", "%")
        if english in strings or "%(" in english:
            continue
        if " " not in english.strip():
            if english.strip() in nodes:
                left.append(english)
        elif re.search(rf"(?<![\w-]){re.escape(english)}(?![\w-])", text):
            left.append(english)
    return left


def test_the_switch_and_accept_language_choose_the_language(world: World) -> None:
    client = world.client
    client.cookies.clear()
    assert '<html lang="en">' in client.get("/").text
    assert '<html lang="it">' in client.get("/", headers=IT).text
    assert '<html lang="en">' in client.get("/", headers={"Accept-Language": "de, fr"}).text
    switched = client.get("/", params={"lang": "it"})
    assert "Le AI Factories" in switched.text and switched.cookies.get("fabbrica_lang") == "it"
    assert '<html lang="it">' in client.get("/sign-in").text  # the cookie remembers it
    back = client.get("/", params={"lang": "en"}, headers=IT)  # the switch wins
    assert "The AI Factories" in back.text
    assert client.get("/", params={"lang": "xx"}).status_code == 200


def test_italian_pages_of_every_role_show_no_english_message(world: World) -> None:
    pid, project = world.proposal, world.project
    pages = {
        "": ["/", "/factories/it4lia", "/sign-in"],
        "pi@startup.it": [
            "/projects",
            f"/projects/{project}",
            f"/proposals/{pid}",
            "/apply",
            "/calls/it4lia-large-scale/apply",
            "/allocations",
            "/jobs",
            "/notebooks",
            "/notices",
            "/usage",
            "/account",
        ],
        "r0@review.eu": ["/review", f"/review/{pid}"],
        "op@it4lia.it": [
            "/operate",
            f"/operate/proposals/{pid}",
            "/operate/calls",
            "/operate/calls/it4lia-large-scale",
            "/operate/allocations",
            "/operate/agents",
        ],
        "admin@localhost": ["/dashboard"],
    }
    for email, paths in pages.items():
        client = world.as_user(email) if email else world.client
        for path in paths:
            page = client.get(path, headers=IT)
            assert page.status_code == 200, (email, path)
            assert '<html lang="it">' in page.text, path
            left = english_left(page.text)
            assert left == [], (email, path, left)
    proposal = world.as_user("pi@startup.it").get(f"/proposals/{pid}", headers=IT).text
    assert "80.000 ore GPU per 6 mesi" in proposal  # numbers the Italian way
    assert re.search(r"Inviata</dt><dd>\d{1,2} [a-z]{3} \d{4}", proposal)  # 1 dic 2026
