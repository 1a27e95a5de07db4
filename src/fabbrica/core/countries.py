"""Country codes an organisation may give: ISO 3166-1 alpha-2, and the two codes the
European Union uses in place of ISO's (EL for Greece, UK for the United Kingdom), which
EuroHPC documents and the shipped catalog write. Pure data."""

from __future__ import annotations

from fabbrica.core.errors import InvalidInput

# ISO 3166-1 alpha-2, officially assigned codes (249).
_ISO_CODES = (
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO "
    "BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ "
    "DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP "
    "GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG "
    "KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML "
    "MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE "
    "PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL "
    "SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM "
    "US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW "
)
ISO_3166_1_ALPHA_2 = frozenset(_ISO_CODES.split())
# Exceptionally reserved by ISO at the EU's request, and used by the EU (and EuroHPC's
# lists, and so the catalog): EL = Greece (ISO GR), UK = United Kingdom (ISO GB).
EU_CODES = {"EL": "GR", "UK": "GB"}
COUNTRY_CODES = ISO_3166_1_ALPHA_2 | frozenset(EU_CODES)


def country_code(value: str, field: str = "country") -> str:
    """`value` as an upper-case country code; InvalidInput naming `field` unless it is an
    ISO 3166-1 alpha-2 code or EL/UK. The code is kept as given (EL stays EL): eligibility
    compares it with the catalog's lists, which use the EU's codes."""
    code = value.strip().upper()
    if len(code) != 2 or not code.isascii() or not code.isalpha():
        raise InvalidInput(f"{value[:20]!r} is not a two-letter country code", field=field)
    if code not in COUNTRY_CODES:
        raise InvalidInput(
            f"{code} is not an ISO 3166-1 alpha-2 country code (nor EL or UK, the EU's codes "
            "for Greece and the United Kingdom)",
            field=field,
        )
    return code
