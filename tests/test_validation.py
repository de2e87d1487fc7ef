"""The validation rules: each reason code on a named bad input, shape errors, fuzzing."""

from __future__ import annotations

import datetime as dt
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.validation import (
    FIELDS,
    LETTERS,
    canonical_name,
    normalise_name,
    normalise_phone,
    parse_row,
    treasury_warnings,
    validate_record,
)
from schemas import KeyType, Rejection, RequestRecord

TODAY = dt.date(2026, 3, 2)
ALL_KEY_TYPES = [k.value for k in KeyType]
# DOMAIN.md's example CCCD: Thanh Hóa (038), male born in the 1900s (0), 1993 (93).
GOOD_ROW: dict[str, object] = {
    "request_ref": "HS-000001",
    "full_name": "Nguyễn Văn An",
    "citizen_id": "038093015572",
    "date_of_birth": "1993-05-04",
    "sex": "male",
    "email": "annv@mof.gov.vn",
    "phone": "0912345678",
    "position": "Chuyên viên",
    "role": "staff",
    "unit_code": "1047665",
    "organization": "Bộ Tài chính",
    "organizational_units": "Vụ Kế hoạch - Tài chính",
    "province": "Hà Nội",
    "key_type": "rsa2048",
}


def rejections_for(**changes: object) -> list[Rejection]:
    """Shape and domain rejections of GOOD_ROW with ``changes`` applied."""
    record, rejections = parse_row({**GOOD_ROW, **changes})
    if record is None:
        return rejections
    return validate_record(record, today=TODAY, allowed_key_types=["rsa2048", "rsa3072"])


def test_the_good_row_passes_every_rule() -> None:
    """The reference row (DOMAIN.md's example CCCD) has no rejection at all."""
    assert rejections_for() == []


# (reason code, field at fault, the defect as changes to GOOD_ROW)
BAD_INPUTS: dict[str, tuple[str, str | None, dict[str, object]]] = {
    "required field absent": ("field.missing", "email", {"email": ""}),
    "whitespace-only required field": ("field.missing", "position", {"position": "   "}),
    "extra column": ("field.unknown", "notes", {"notes": "urgent"}),
    "sex not in the enum": ("field.invalid", "sex", {"sex": "other"}),
    "role not in the enum": ("field.invalid", "role", {"role": "boss"}),
    "date in dd/mm/yyyy": ("field.invalid", "date_of_birth", {"date_of_birth": "04/05/1993"}),
    "date that pydantic would read as a timestamp": ("field.invalid", "date_of_birth", {"date_of_birth": "0"}),
    "impossible date": ("field.invalid", "date_of_birth", {"date_of_birth": "1993-02-30"}),
    "five organizational units": ("field.too_long", "organizational_units", {"organizational_units": "a;b;c;d;e"}),
    "zero-width space in name": ("full_name.control_character", "full_name", {"full_name": "Nguyễn Văn\u200b An"}),
    "newline in name": ("full_name.control_character", "full_name", {"full_name": "Nguyễn Văn\nAn"}),
    "Icelandic eth for Đ": ("full_name.lookalike", "full_name", {"full_name": "\u00d0ặng Văn An"}),
    "Cyrillic a in name": ("full_name.lookalike", "full_name", {"full_name": "Nguyễn Văn \u0410n"}),
    "Greek omicron in name": ("full_name.lookalike", "full_name", {"full_name": "Ng\u03bfc Văn An"}),
    "German sharp s": ("full_name.script", "full_name", {"full_name": "Nguyễn Văn Straße"}),
    "digit in name": ("full_name.script", "full_name", {"full_name": "Nguyễn Văn An 2"}),
    "Han characters": ("full_name.script", "full_name", {"full_name": "阮 文安"}),
    "one word": ("full_name.words", "full_name", {"full_name": "An"}),
    "two tone marks in a syllable": ("full_name.tone_marks", "full_name", {"full_name": "Nguyễến Văn An"}),
    "name over 64 UTF-8 bytes": ("full_name.too_long", "full_name",
                                 {"full_name": "Nguyễn Thị Phương Quỳnh Hương Huyền Trường Thủy Ngọc"}),
    "eleven digits": ("citizen_id.format", "citizen_id", {"citizen_id": "38093015572"}),
    "letters in CCCD": ("citizen_id.format", "citizen_id", {"citizen_id": "03809301557A"}),
    "Arabic-Indic digits": ("citizen_id.format", "citizen_id", {"citizen_id": "٠٣٨٠٩٣٠١٥٥٧٢"}),
    "old 9-digit CMND": ("citizen_id.cmnd", "citizen_id", {"citizen_id": "038093015"}),
    "province code 099": ("citizen_id.province", "citizen_id", {"citizen_id": "099093015572"}),
    "female digit for a man": ("citizen_id.century_sex", "citizen_id", {"citizen_id": "038193015572"}),
    "2000s digit for a 1993 birth": ("citizen_id.century_sex", "citizen_id", {"citizen_id": "038293015572"}),
    "birth year 94 against 1993": ("citizen_id.birth_year", "citizen_id", {"citizen_id": "038094015572"}),
    "seventeen years old": ("date_of_birth.age", "date_of_birth",
                            {"date_of_birth": "2008-03-03", "citizen_id": "038208015572"}),
    "sixty-six years old": ("date_of_birth.age", "date_of_birth",
                            {"date_of_birth": "1960-03-01", "citizen_id": "038060015572"}),
    "e-mail without domain dot": ("email.format", "email", {"email": "annv@localhost"}),
    "e-mail with double dot": ("email.format", "email", {"email": "an..nv@mof.gov.vn"}),
    "e-mail with accents": ("email.format", "email", {"email": "ânnv@mof.gov.vn"}),
    "landline number": ("phone.format", "phone", {"phone": "02438253541"}),
    "mobile with prefix 01": ("phone.format", "phone", {"phone": "0112345678"}),
    "six-digit unit code": ("unit_code.format", "unit_code", {"unit_code": "104766"}),
    "unit code with a letter": ("unit_code.format", "unit_code", {"unit_code": "104766X"}),
    "invisible-only position": ("position.blank", "position", {"position": "\u200b"}),
    "tab in position": ("position.control_character", "position", {"position": "Chuyên\tviên"}),
    "position over 64 bytes": ("position.too_long", "position", {"position": "Phó Chánh Văn phòng " * 4}),
    "bidi override in organization": ("organization.control_character", "organization",
                                      {"organization": "Bộ Tài\u202e chính"}),
    "organization over 64 bytes": ("organization.too_long", "organization",
                                   {"organization": "Ủy ban nhân dân thành phố Hồ Chí Minh, Sở Giáo dục và Đào tạo"}),
    "invisible-only unit": ("organizational_units.blank", "organizational_units",
                            {"organizational_units": ["Vụ Pháp chế", "\u2060"]}),
    "unit over 64 bytes": ("organizational_units.too_long", "organizational_units",
                           {"organizational_units": "Trung tâm Thông tin và Truyền thông thuộc Văn phòng Ủy ban"}),
    "control character in province": ("province.control_character", "province", {"province": "Hà\x07 Nội"}),
    "ECDSA when policy allows RSA only": ("key_type.not_allowed", "key_type", {"key_type": "ecdsa-p256"}),
}


@pytest.mark.parametrize("defect", list(BAD_INPUTS))
def test_each_defect_is_rejected_with_its_reason_code(defect: str) -> None:
    """A bad input yields exactly its code, naming its field, in English / Vietnamese."""
    code, field, changes = BAD_INPUTS[defect]
    rejections = rejections_for(**changes)
    matching = [r for r in rejections if r.code == code]
    assert len(matching) == 1, rejections
    assert matching[0].field == field
    english, _, vietnamese = matching[0].message.partition(" / ")
    assert english.startswith(f"{field}: ") and vietnamese.strip()


def test_province_message_names_the_code_in_both_languages() -> None:
    """The message says which code is wrong, as the brief's example wording does."""
    (rejection,) = rejections_for(citizen_id="099093015572")
    assert rejection.message == "citizen_id: province code 099 is not a known code / Mã tỉnh 099 không hợp lệ"


def test_a_cccd_that_lost_its_leading_zero_in_a_spreadsheet_gets_a_hint() -> None:
    """An integer cell is read as text, and the format message explains the lost zero."""
    (rejection,) = rejections_for(citizen_id=38093015572)
    assert rejection.code == "citizen_id.format" and "leading zero" in rejection.message


def test_an_invalid_enum_lists_the_allowed_values() -> None:
    """A clerk can fix the cell from the message alone."""
    (rejection,) = rejections_for(key_type="rsa1024")
    assert rejection.code == "field.invalid" and "rsa2048, rsa3072, ecdsa-p256" in rejection.message


def test_a_row_that_is_not_a_mapping_is_rejected_not_raised() -> None:
    """parse_row refuses a list politely."""
    record, rejections = parse_row(["Nguyễn Văn An"])  # type: ignore[arg-type]
    assert record is None and rejections[0].code == "row.invalid"


def test_spreadsheet_habits_are_undone() -> None:
    """BOM in the header, Nữ for female, "|"-separated units, a datetime cell, empty phone."""
    row = {**GOOD_ROW, "sex": "Nữ", "citizen_id": "038193015572", "phone": "",
           "organizational_units": " Cục Công nghệ thông tin | Trung tâm Dữ liệu ",
           "date_of_birth": dt.datetime(1993, 5, 4), "key_type": "RSA3072"}
    row["\ufeffrequest_ref"] = row.pop("request_ref")
    record, rejections = parse_row(row)
    assert rejections == [] and record is not None
    assert record.sex == "female" and record.phone is None and record.key_type == KeyType.rsa3072
    assert record.organizational_units == ("Cục Công nghệ thông tin", "Trung tâm Dữ liệu")
    assert record.date_of_birth == dt.date(1993, 5, 4)


def test_every_shape_error_is_reported_once_per_field() -> None:
    """Several bad fields give several rejections, none twice for the same field."""
    _, rejections = parse_row({"full_name": "Nguyễn Văn An", "sex": "x"})
    fields = [r.field for r in rejections]
    assert len(fields) == len(set(fields))
    assert {"request_ref", "citizen_id", "sex", "email"} <= set(fields)


def test_ethnic_minority_names_with_apostrophes_and_f_j_w_z_pass() -> None:
    """Names such as Ksor H'Wưu or Y-Jút are Latin script, not a rejection."""
    assert rejections_for(full_name="Ksor H'Wưu") == []
    assert rejections_for(full_name="Y-Jút Niê") == []


def test_an_nfd_name_passes_and_normalises_to_nfc() -> None:
    """A name typed on macOS (NFD) is the same name, stored composed."""
    nfd = unicodedata.normalize("NFD", "Nguyễn  Thị   Hoà")
    assert rejections_for(full_name=nfd) == []
    assert normalise_name(nfd) == unicodedata.normalize("NFC", "Nguyễn Thị Hoà")


def test_the_vietnamese_alphabet_is_precomposed() -> None:
    """Every toned vowel is one code point, so the alphabet check can go char by char."""
    assert all(len(letter) == 1 for letter in LETTERS)
    assert {"ầ", "Ự", "ỹ", "Đ", "ơ"} <= LETTERS and "\u00d0" not in LETTERS
    assert len(LETTERS) == 52 + 2 + 12 * 6 * 2 - 12


@pytest.mark.parametrize(("old", "new"), [("Hòa", "Hoà"), ("Thúy", "Thuý"), ("Khỏe", "Khoẻ"),
                                          ("Thủy", "Thuỷ"), ("Hòe", "Hoè"), ("Loan", "loan")])
def test_old_and_new_tone_placement_are_the_same_canonical_name(old: str, new: str) -> None:
    """Duplicate detection sees "Nguyễn Thị Hòa" and "NGUYỄN THỊ HOÀ" as one person."""
    assert canonical_name(f"Nguyễn Thị {old}") == canonical_name(f"NGUYỄN  THỊ {new.upper()}")
    assert canonical_name(unicodedata.normalize("NFD", old)) == canonical_name(new)


@pytest.mark.parametrize(("a", "b"), [("Hòa", "Hoa"), ("Thúy", "Thùy"), ("Nguyễn Văn An", "Nguyễn An")])
def test_different_names_stay_different_canonically(a: str, b: str) -> None:
    """Canonicalising must not merge names that differ in tone or words."""
    assert canonical_name(a) != canonical_name(b)


@pytest.mark.parametrize("phone", ["0912345678", "+84912345678", "091 234 5678", "+84 91.234.5678"])
def test_mobile_numbers_normalise_to_plus_84(phone: str) -> None:
    """All national and international spellings become +84 and nine digits."""
    assert normalise_phone(phone) == "+84912345678"


def test_normalise_phone_refuses_a_landline() -> None:
    """A non-mobile number is an error, not a silently wrong value."""
    with pytest.raises(ValueError, match="mobile"):
        normalise_phone("02438253541")


def _record(role: str, unit: str = "1047665") -> RequestRecord:
    record, _ = parse_row({**GOOD_ROW, "role": role, "unit_code": unit})
    assert record is not None
    return record


def test_treasury_warnings_name_the_missing_signer_per_unit() -> None:
    """A unit without a chief accountant, and one without an account holder, are both named."""
    warnings = treasury_warnings([_record("account_holder", "1000001"), _record("chief_accountant", "1000002"),
                                  _record("account_holder", "1000003"), _record("chief_accountant", "1000003")])
    assert len(warnings) == 2
    assert warnings[0].startswith("unit 1000001: no chief_accountant")
    assert warnings[1].startswith("unit 1000002: no account_holder")


def test_treasury_warnings_flag_more_delegates_than_the_treasury_takes() -> None:
    """Three chief-accountant delegates exceed the Treasury's two."""
    records = [_record("account_holder"), _record("chief_accountant")] + [_record("chief_accountant_delegate")] * 3
    (warning,) = treasury_warnings(records)
    assert "3 chief_accountant_delegate" in warning and "at most 2" in warning


ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)  # lone surrogates too
KNOWN_PREFIXES = {*FIELDS, "field", "row"}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.one_of(st.sampled_from(FIELDS), ANY_TEXT),
                       st.one_of(ANY_TEXT, st.none(), st.integers(), st.booleans(), st.floats(),
                                 st.dates(), st.lists(ANY_TEXT, max_size=6)), max_size=16))
def test_parse_row_never_raises_on_arbitrary_rows(row: dict[str, object]) -> None:
    """Whatever the row, parse_row gives a record or at least one rejection."""
    record, rejections = parse_row(row)
    assert (record is None) == bool(rejections)
    assert all(r.code.split(".")[0] in KNOWN_PREFIXES for r in rejections)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), ANY_TEXT, max_size=len(FIELDS)), st.dates())
def test_validation_never_raises_on_near_valid_rows(changes: dict[str, str], today: dt.date) -> None:
    """Arbitrary text in any field of a good row: both steps finish with known codes."""
    record, rejections = parse_row({**GOOD_ROW, **changes})
    if record is not None:
        rejections = validate_record(record, today=today, allowed_key_types=ALL_KEY_TYPES)
    assert all(r.code.split(".")[0] in KNOWN_PREFIXES for r in rejections)
