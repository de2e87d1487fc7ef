"""Validation of request records (DESIGN.md §4; formats in DOMAIN.md "Identifiers").

Two steps. ``parse_row`` turns a raw row (CSV/xlsx strings or JSON values) into a
``RequestRecord`` and reports shape errors (missing, unknown, invalid fields).
``validate_record`` then runs the domain rules: one small function per rule in ``RULES``,
each yielding zero or more ``Rejection`` with a stable dotted code and a message that
names the field and the rule in English, then Vietnamese. Pure logic, no I/O.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from schemas import KeyType, Rejection, RequestRecord, Role, Sex

# Province codes of birth registration before the 2025 merger; CCCDs keep using them.
PROVINCE_CODES = frozenset(
    "001 002 004 006 008 010 011 012 014 015 017 019 020 022 024 025 026 027 030 031 033"
    " 034 035 036 037 038 040 042 044 045 046 048 049 051 052 054 056 058 060 062 064 066"
    " 067 068 070 072 074 075 077 079 080 082 083 084 086 087 089 091 092 093 094 095 096".split()
)
MIN_AGE, MAX_AGE = 18, 65  # a civil servant's working life, roughly (DOMAIN.md)
# RFC 5280 caps CN, O, OU and title at 64; pyca/cryptography counts UTF-8 bytes.
MAX_ATTRIBUTE_BYTES = 64
FIELDS: tuple[str, ...] = tuple(RequestRecord.model_fields)

TONE_MARKS = "\u0300\u0301\u0303\u0309\u0323"  # huyền, sắc, ngã, hỏi, nặng
_VOWELS = "aăâeêioôơuưy"
# Every letter a Vietnamese name may use, precomposed (NFC). All 26 ASCII letters stay in:
# f, j, w, z are not in the Vietnamese alphabet but ethnic-minority names use them.
LETTERS = frozenset(
    string.ascii_letters
    + "đĐ"
    + "".join(unicodedata.normalize("NFC", v + t) for v in _VOWELS + _VOWELS.upper() for t in ("", *TONE_MARKS))
)
_NAME_PUNCTUATION = frozenset(" -'")
_LOOKALIKES = {"\u00d0": "Đ (U+0110)", "\u00f0": "đ (U+0111)", "\u0189": "Đ (U+0110)",
               "\u0256": "đ (U+0111)", "\u0131": "i", "\u0130": "I"}
_LOOKALIKE_SCRIPTS = ("CYRILLIC", "GREEK", "FULLWIDTH", "MATHEMATICAL", "SMALL CAPITAL")
# Cc control, Cf format (zero-width, bidi), Co private use, Cs lone surrogate, Cn unassigned.
_INVISIBLE = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})

_CCCD = re.compile(r"[0-9]{12}")
_UNIT_CODE = re.compile(r"[0-9]{7}")
_PHONE = re.compile(r"(?:0|\+84)([35789][0-9]{8})")
_PHONE_SEPARATORS = re.compile(r"[ .\-()]")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# ASCII only: the address goes into an IA5String rfc822Name, and gov.vn mailboxes are ASCII.
_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _reject(code: str, field: str | None, english: str, vietnamese: str) -> Rejection:
    return Rejection(code=code, field=field, message=f"{field or 'row'}: {english} / {vietnamese}")


def _utf8_len(text: str) -> int:
    # surrogatepass: JSON may smuggle lone surrogates in; measuring must not raise.
    return len(text.encode("utf-8", "surrogatepass"))


def _invisible(text: str) -> list[str]:
    if text.isprintable():  # C-speed fast path: every _INVISIBLE category is non-printable
        return []
    return sorted({f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in _INVISIBLE})


def normalise_name(name: str) -> str:
    """The stored form of a name: NFC, whitespace runs collapsed to one space, trimmed."""
    return " ".join(unicodedata.normalize("NFC", name).split())


def _tone_position(word: str) -> int | None:
    """Index of the vowel carrying the tone in a toneless lowercase word (new style)."""
    start = 2 if word.startswith("qu") or (word.startswith("gi") and len(word) > 2 and word[2] in _VOWELS) else 0
    first = next((i for i in range(start, len(word)) if word[i] in _VOWELS), None)
    if first is None:
        return None
    end = first
    while end < len(word) and word[end] in _VOWELS:
        end += 1
    cluster = word[first:end]
    marked = [i for i, v in enumerate(cluster) if v in "ăâêôơư"]
    if marked:  # ươ → ơ, iê → ê: the last vowel with its own diacritic
        return first + marked[-1]
    if end < len(word) or len(cluster) == 1:  # closed syllable: the last vowel (hoàng)
        return end - 1
    if len(cluster) == 3:  # ngoài, khuỷu
        return first + 1
    return first + 1 if cluster in ("oa", "oe", "uy") else first  # hoà, khoẻ, thuý; mái


@functools.lru_cache(maxsize=1 << 16)  # names repeat a lot in a ministry's batch; bounded
def _canonical_word(word: str) -> str:
    if word.isascii():  # no tone mark to move
        return word
    decomposed = unicodedata.normalize("NFD", word)
    tones = [c for c in decomposed if c in TONE_MARKS]
    if len(tones) != 1:
        return word
    bare = unicodedata.normalize("NFC", "".join(c for c in decomposed if c not in TONE_MARKS))
    at = _tone_position(bare)
    if at is None:
        return word
    return unicodedata.normalize("NFC", bare[: at + 1] + tones[0] + bare[at + 1 :])


def canonical_name(name: str) -> str:
    """A key for duplicate detection: case-folded, tone marks placed one way.

    Old and new tone placement ("Hòa"/"Hoà", "Thúy"/"Thuý", "Khỏe"/"Khoẻ") are different
    NFC strings; both map to the new-style placement here, so they compare equal.
    """
    return " ".join(_canonical_word(w) for w in normalise_name(name).casefold().split(" "))


def normalise_phone(phone: str) -> str:
    """A Vietnamese mobile number in ``+84…`` form; ``ValueError`` if it is not one."""
    match = _PHONE.fullmatch(_PHONE_SEPARATORS.sub("", phone))
    if match is None:
        raise ValueError(f"not a Vietnamese mobile number: {phone!r}")
    return "+84" + match.group(1)


# --- parse_row: shape ---------------------------------------------------------------

_ENUMS: dict[str, tuple[str, ...]] = {
    "sex": tuple(Sex), "role": tuple(Role), "key_type": tuple(KeyType)}
# The xlsx template is filled in by Vietnamese clerks who write Nam/Nữ.
_SEX_ALIASES = {"nam": "male", "nữ": "female", "nu": "female"}
_TEXT_FIELDS = frozenset(FIELDS) - {"date_of_birth", "organizational_units", *_ENUMS}


def _clean(name: str, value: object) -> object | None:
    """Undo spreadsheet habits; ``None`` means the value is absent."""
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
        if name == "organizational_units":
            parts = tuple(p.strip() for p in re.split(r"[;|]", value) if p.strip())
            return parts or None
        if name in _ENUMS:
            lowered = unicodedata.normalize("NFC", value).lower()
            return _SEX_ALIASES.get(lowered, lowered) if name == "sex" else lowered
        return value
    if name in _TEXT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a numeric xlsx cell; a lost leading zero is caught by the rules
    if name == "date_of_birth" and isinstance(value, dt.datetime):
        return value.date()
    if name == "organizational_units" and isinstance(value, (list, tuple)):
        parts = tuple(p.strip() if isinstance(p, str) else p for p in value)
        return tuple(p for p in parts if p != "") or None
    return value


def _shape_rejection(error: Mapping[str, object]) -> Rejection:
    loc = error.get("loc") or ()
    field = str(loc[0]) if isinstance(loc, tuple) and loc else None  # type: ignore[index]
    kind = error.get("type")
    if kind == "missing" or kind == "string_too_short":
        return _reject("field.missing", field, "required field is missing or empty", "Thiếu trường bắt buộc")
    if kind == "extra_forbidden":
        return _reject("field.unknown", field, f"unknown column; expected one of {', '.join(FIELDS)}",
                       "Cột không có trong mẫu")
    if kind in ("string_too_long", "too_long"):
        return _reject("field.too_long", field, str(error.get("msg")), "Giá trị quá dài")
    if field in _ENUMS:
        allowed = ", ".join(_ENUMS[field])
        return _reject("field.invalid", field, f"must be one of {allowed}", f"Giá trị phải là một trong: {allowed}")
    return _reject("field.invalid", field, str(error.get("msg")), "Giá trị không hợp lệ")


def parse_row(raw: Mapping[str, object]) -> tuple[RequestRecord | None, list[Rejection]]:
    """Build a ``RequestRecord`` from a raw row, or say per field why not. Never raises.

    Empty strings are absent values; ``organizational_units`` may be a list or a string
    split on ";" or "|"; ``sex`` accepts Nam/Nữ; dates must be ISO ``YYYY-MM-DD``.
    """
    if not isinstance(raw, Mapping):
        return None, [_reject("row.invalid", None, "a row must be a mapping of field to value",
                              "Dòng dữ liệu không đúng định dạng")]
    data: dict[str, object] = {}
    rejections: list[Rejection] = []
    for key, value in raw.items():
        name = str(key).strip().lstrip("\ufeff").strip()  # Excel's CSV export adds a BOM
        cleaned = _clean(name, value)
        if cleaned is None:
            continue
        # pydantic reads "0" or "19930504" as Unix timestamps: accept ISO text only.
        if name == "date_of_birth" and isinstance(cleaned, str) and not _ISO_DATE.fullmatch(cleaned):
            rejections.append(_reject("field.invalid", name, "expected an ISO date YYYY-MM-DD",
                                      "Ngày sinh phải theo dạng YYYY-MM-DD"))
            continue
        data[name] = cleaned
    try:
        record = RequestRecord.model_validate(data)
    except ValidationError as exc:
        seen = {r.field for r in rejections}
        for error in exc.errors(include_url=False):
            rejection = _shape_rejection(error)  # type: ignore[arg-type]
            if rejection.field not in seen:  # one rejection per field is enough to fix it
                seen.add(rejection.field)
                rejections.append(rejection)
        return None, rejections
    return (None, rejections) if rejections else (record, [])


# --- validate_record: the domain rules ----------------------------------------------


@dataclass(frozen=True)
class RuleContext:
    """What the rules need besides the record: the date and the policy."""

    today: dt.date
    allowed_key_types: frozenset[str]


Rule = Callable[[RequestRecord, RuleContext], Iterator[Rejection]]


def full_name_characters(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """Control/format characters, look-alikes (Ð for Đ, Cyrillic, Greek), other scripts."""
    raw = unicodedata.normalize("NFC", record.full_name)
    if hidden := _invisible(raw):
        yield _reject("full_name.control_character", "full_name",
                      f"contains control or invisible characters {', '.join(hidden)}",
                      "Họ và tên chứa ký tự điều khiển hoặc ký tự ẩn")
    bad = [c for c in dict.fromkeys(normalise_name(raw))
           if c not in LETTERS and c not in _NAME_PUNCTUATION and unicodedata.category(c) not in _INVISIBLE]
    lookalikes = [c for c in bad if c in _LOOKALIKES or any(s in unicodedata.name(c, "") for s in _LOOKALIKE_SCRIPTS)]
    if lookalikes:
        shown = ", ".join(f"{c!r} U+{ord(c):04X}" + (f" (use {_LOOKALIKES[c]})" if c in _LOOKALIKES else "")
                          for c in lookalikes)
        yield _reject("full_name.lookalike", "full_name",
                      f"look-alike characters that are not Vietnamese letters: {shown}",
                      "Họ và tên chứa ký tự trông giống chữ tiếng Việt nhưng sai mã (ví dụ Ð thay cho Đ)")
    if others := [c for c in bad if c not in lookalikes]:
        shown = ", ".join(f"{c!r} U+{ord(c):04X}" for c in others)
        yield _reject("full_name.script", "full_name",
                      f"characters outside the Vietnamese alphabet, space, hyphen, apostrophe: {shown}",
                      "Họ và tên chứa ký tự ngoài bảng chữ cái tiếng Việt")


def full_name_words(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """Family and given name at least, each word carrying a letter."""
    words = normalise_name(record.full_name).split(" ")
    if len(words) < 2 or not all(any(c.isalpha() for c in w) for w in words):
        yield _reject("full_name.words", "full_name", "needs at least two words (family and given name)",
                      "Họ và tên phải có ít nhất hai từ")


def full_name_tone_marks(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """A syllable carries at most one tone mark; two betray a typo or mojibake."""
    for word in normalise_name(record.full_name).split(" "):
        if sum(c in TONE_MARKS for c in unicodedata.normalize("NFD", word)) > 1:
            yield _reject("full_name.tone_marks", "full_name", f"the word {word!r} has more than one tone mark",
                          f"Tiếng {word!r} có nhiều hơn một dấu thanh")
            return


def full_name_length(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """The name must fit the certificate CN: 64 UTF-8 bytes, Vietnamese letters take 2–3."""
    size = _utf8_len(normalise_name(record.full_name))
    if size > MAX_ATTRIBUTE_BYTES:
        yield _reject("full_name.too_long", "full_name",
                      f"is {size} UTF-8 bytes; the certificate CN holds at most {MAX_ATTRIBUTE_BYTES}",
                      f"Họ và tên dài {size} byte UTF-8, tối đa {MAX_ATTRIBUTE_BYTES} byte cho chứng thư số")


def citizen_id_format(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """Twelve ASCII digits; a 9-digit CMND is no longer valid since 2025-01-01."""
    cid = record.citizen_id
    if _CCCD.fullmatch(cid):
        return
    if re.fullmatch(r"[0-9]{9}", cid):
        yield _reject("citizen_id.cmnd", "citizen_id",
                      "a 9-digit CMND is invalid since 2025-01-01; give the 12-digit CCCD",
                      "CMND 9 số hết giá trị từ 01/01/2025, hãy dùng số CCCD 12 số")
    else:
        hint = " (a spreadsheet may have dropped a leading zero)" if re.fullmatch(r"[0-9]{11}", cid) else ""
        yield _reject("citizen_id.format", "citizen_id", f"must be exactly 12 digits{hint}",
                      "Số CCCD phải gồm đúng 12 chữ số")


def citizen_id_province(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """Digits 1–3: one of the 63 pre-2025 province codes."""
    if _CCCD.fullmatch(record.citizen_id) and (code := record.citizen_id[:3]) not in PROVINCE_CODES:
        yield _reject("citizen_id.province", "citizen_id", f"province code {code} is not a known code",
                      f"Mã tỉnh {code} không hợp lệ")


def citizen_id_century_sex(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """Digit 4: century and sex (0/1 1900s male/female, 2/3 2000s, …)."""
    if not _CCCD.fullmatch(record.citizen_id):
        return
    digit = int(record.citizen_id[3])
    year = record.date_of_birth.year
    expected = (year // 100 - 19) * 2 + (record.sex == Sex.female)
    if digit != expected:
        said = f"{'female' if digit % 2 else 'male'} born in the {1900 + digit // 2 * 100}s"
        yield _reject("citizen_id.century_sex", "citizen_id",
                      f"digit 4 is {digit} ({said}) but the record says {record.sex.value} born {year}",
                      "Chữ số thứ 4 (thế kỷ, giới tính) không khớp ngày sinh và giới tính")


def citizen_id_birth_year(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """Digits 5–6: the last two digits of the birth year."""
    if _CCCD.fullmatch(record.citizen_id) and record.citizen_id[4:6] != f"{record.date_of_birth.year % 100:02d}":
        yield _reject("citizen_id.birth_year", "citizen_id",
                      f"digits 5-6 are {record.citizen_id[4:6]} but the birth year is {record.date_of_birth.year}",
                      "Chữ số thứ 5-6 không khớp năm sinh")


def date_of_birth_age(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """Age on ``today`` between MIN_AGE and MAX_AGE inclusive."""
    born, today = record.date_of_birth, ctx.today
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    if not MIN_AGE <= age <= MAX_AGE:
        yield _reject("date_of_birth.age", "date_of_birth", f"age {age} is outside {MIN_AGE}-{MAX_AGE}",
                      f"Tuổi {age} nằm ngoài khoảng {MIN_AGE}-{MAX_AGE}")


def email_format(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """Plain ASCII address: dot-atom local part (≤64), dotted host names, letter TLD."""
    email = record.email
    if not (_EMAIL.fullmatch(email) and len(email) <= 254 and len(email.split("@")[0]) <= 64):
        yield _reject("email.format", "email", f"{email[:80]!r} is not a valid e-mail address",
                      "Địa chỉ thư điện tử không hợp lệ")


def phone_format(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """Optional; a mobile number: 0 or +84, then 3/5/7/8/9 and 8 digits."""
    if record.phone and not _PHONE.fullmatch(_PHONE_SEPARATORS.sub("", record.phone)):
        yield _reject("phone.format", "phone", "not a Vietnamese mobile number (0 or +84, then 3/5/7/8/9 and 8 digits)",
                      "Số điện thoại di động không hợp lệ")


def unit_code_format(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """The budget unit code (mã ĐVQHNS): exactly seven digits."""
    if not _UNIT_CODE.fullmatch(record.unit_code):
        yield _reject("unit_code.format", "unit_code", "must be exactly 7 digits", "Mã ĐVQHNS phải gồm đúng 7 chữ số")


def _attribute_text(field: str, value: str) -> Iterator[Rejection]:
    """A subject attribute: not blank, nothing invisible, at most 64 UTF-8 bytes."""
    text = unicodedata.normalize("NFC", value)
    visible = text if text.isprintable() else "".join(c for c in text if unicodedata.category(c) not in _INVISIBLE)
    if not visible.strip():
        yield _reject(f"{field}.blank", field, "must not be blank", "Không được để trống")
    elif hidden := _invisible(text):
        yield _reject(f"{field}.control_character", field,
                      f"contains control or invisible characters {', '.join(hidden)}",
                      "Chứa ký tự điều khiển hoặc ký tự ẩn")
    if (size := _utf8_len(text)) > MAX_ATTRIBUTE_BYTES:
        yield _reject(f"{field}.too_long", field,
                      f"{text[:40]!r}… is {size} UTF-8 bytes; a certificate attribute holds {MAX_ATTRIBUTE_BYTES}",
                      f"Dài {size} byte UTF-8, tối đa {MAX_ATTRIBUTE_BYTES} byte")


def position_text(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """The title (subject T): non-blank, clean, fits 64 UTF-8 bytes."""
    yield from _attribute_text("position", record.position)


def organization_text(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """The organisation (subject O), the OUs and the province (subject ST)."""
    yield from _attribute_text("organization", record.organization)
    for unit in record.organizational_units:
        yield from _attribute_text("organizational_units", unit)
    yield from _attribute_text("province", record.province)


def key_type_allowed(record: RequestRecord, ctx: RuleContext) -> Iterator[Rejection]:
    """The key type must be one the policy allows."""
    if record.key_type.value not in ctx.allowed_key_types:
        allowed = ", ".join(sorted(ctx.allowed_key_types)) or "none"
        yield _reject("key_type.not_allowed", "key_type", f"{record.key_type.value} is not allowed; allowed: {allowed}",
                      f"Loại khóa {record.key_type.value} không được phép; được phép: {allowed}")


RULES: tuple[Rule, ...] = (
    full_name_characters, full_name_words, full_name_tone_marks, full_name_length,
    citizen_id_format, citizen_id_province, citizen_id_century_sex, citizen_id_birth_year,
    date_of_birth_age, email_format, phone_format, unit_code_format, position_text,
    organization_text, key_type_allowed,
)


def validate_record(record: RequestRecord, *, today: dt.date, allowed_key_types: Collection[str]) -> list[Rejection]:
    """Run every rule in ``RULES``; an empty list means the record is valid."""
    ctx = RuleContext(today=today, allowed_key_types=frozenset(str(getattr(k, "value", k)) for k in allowed_key_types))
    return [rejection for rule in RULES for rejection in rule(record, ctx)]


# The Treasury (DVC KBNN) needs per budget unit one account holder (+≤3 delegates) for the
# first signature and one chief accountant (+≤2 delegates) for the second.
_TREASURY_LIMITS = {Role.account_holder: 1, Role.account_holder_delegate: 3,
                    Role.chief_accountant: 1, Role.chief_accountant_delegate: 2}


def treasury_warnings(records: Iterable[RequestRecord]) -> list[str]:
    """Per unit_code, warn where the batch lacks an account holder or chief accountant,
    or holds more of a Treasury role than the Treasury accepts."""
    roles: dict[str, Counter[Role]] = {}
    for record in records:
        roles.setdefault(record.unit_code, Counter())[record.role] += 1
    warnings: list[str] = []
    for unit in sorted(roles):
        counts = roles[unit]
        if not counts[Role.account_holder]:
            warnings.append(f"unit {unit}: no account_holder in this batch (the Treasury's first signature) / "
                            f"Đơn vị {unit}: thiếu chủ tài khoản (chữ ký thứ nhất)")
        if not counts[Role.chief_accountant]:
            warnings.append(f"unit {unit}: no chief_accountant in this batch (the Treasury's second signature) / "
                            f"Đơn vị {unit}: thiếu kế toán trưởng (chữ ký thứ hai)")
        for role, limit in _TREASURY_LIMITS.items():
            if counts[role] > limit:
                warnings.append(f"unit {unit}: {counts[role]} {role.value}, the Treasury accepts at most {limit} / "
                                f"Đơn vị {unit}: {counts[role]} người vai trò {role.value}, tối đa {limit}")
    return warnings
