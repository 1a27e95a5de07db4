"""The core's rules for what users type and give: text, country codes, GPU-hour amounts."""

from __future__ import annotations

import math
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabbrica.core.billing import MIN_BILLABLE_GPU_HOURS, gpu_hours_problem
from fabbrica.core.countries import COUNTRY_CODES, ISO_3166_1_ALPHA_2, country_code
from fabbrica.core.errors import InvalidInput
from fabbrica.core.text import BIDI_CONTROLS, clean_text

BIDI = "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@pytest.mark.parametrize("char", list(BIDI), ids=[f"U+{ord(c):04X}" for c in BIDI])
@pytest.mark.parametrize("multiline", [False, True])
def test_every_bidi_control_is_refused_naming_the_field_and_the_code_point(
    char: str, multiline: bool
) -> None:
    with pytest.raises(InvalidInput) as err:
        clean_text(f"Acme{char}gpj.exe", "name", max_len=200, multiline=multiline)
    assert err.value.field == "name"
    assert f"U+{ord(char):04X}" in err.value.message
    assert "bidirectional" in err.value.message


def test_the_bidi_set_is_the_one_the_issue_names() -> None:
    assert set(BIDI) == BIDI_CONTROLS


@given(st.characters(categories=["Cf"]))
def test_every_invisible_format_character_is_refused(char: str) -> None:
    with pytest.raises(InvalidInput) as err:
        clean_text(f"a{char}b", "title", max_len=300)
    assert err.value.field == "title"


@pytest.mark.parametrize("char", ["\x85", "\x9b", "\u2028", "\u2029"])
def test_c1_controls_and_line_separators_are_refused_in_one_line_names(char: str) -> None:
    with pytest.raises(InvalidInput, match="control characters"):
        clean_text(f"a{char}b", "name", max_len=200)


@pytest.mark.parametrize(
    "text", ["שלום עולם", "مرحبا بالعالم", "Zoë Ødegård", "株式会社", "O'Brien & Co. — Ltd"]
)
def test_right_to_left_scripts_and_accents_are_welcome(text: str) -> None:
    assert clean_text(f"  {text}  ", "name", max_len=200) == text
    assert unicodedata.category(text[0]) != "Cf"


@pytest.mark.parametrize("code", ["IT", "de", " fr ", "EL", "UK", "GB", "GR", "CH", "NO"])
def test_iso_codes_and_the_eu_codes_are_countries(code: str) -> None:
    assert country_code(code) == code.strip().upper()


@pytest.mark.parametrize("code", ["ZZ", "XX", "AA", "EU", "XK", "QM", "I", "ITA", "1T", "ÏT", ""])
def test_anything_else_is_no_country(code: str) -> None:
    with pytest.raises(InvalidInput) as err:
        country_code(code)
    assert err.value.field == "country"


def test_the_country_table_is_iso_3166_1_with_el_and_uk() -> None:
    assert len(ISO_3166_1_ALPHA_2) == 249
    assert {"EL", "UK"} == COUNTRY_CODES - ISO_3166_1_ALPHA_2
    assert {"GR", "GB", "IT", "DE", "NO", "AX", "SS"} <= ISO_3166_1_ALPHA_2
    assert not {"EL", "UK", "ZZ", "XK", "EU"} & ISO_3166_1_ALPHA_2


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_an_amount_is_refused_exactly_below_one_gpu_minute_above_the_maximum_or_not_finite(
    hours: float,
) -> None:
    valid = math.isfinite(hours) and MIN_BILLABLE_GPU_HOURS <= hours <= 1000
    assert (gpu_hours_problem(hours, maximum=1000) is None) == valid


def test_one_gpu_minute_is_the_smallest_amount() -> None:
    assert pytest.approx(1) == MIN_BILLABLE_GPU_HOURS * 60
    assert gpu_hours_problem(1 / 60, maximum=10) is None
    problem = gpu_hours_problem(1e-7, maximum=10)
    assert problem is not None and "one GPU-minute" in problem and "1e-07" in problem
