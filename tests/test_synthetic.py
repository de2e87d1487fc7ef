"""The synthetic request generator: valid, realistic, unique, reproducible."""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections import Counter, defaultdict

import pytest

from factory.synthetic import FAMILY_NAMES, MIDDLE_NAMES, PROVINCES, ascii_fold, generate_requests
from factory.validation import normalise_phone, treasury_warnings, validate_record
from schemas import KeyType, RequestRecord, Role, Sex

TODAY = dt.date(2026, 3, 2)
ALL_KEY_TYPES = [k.value for k in KeyType]


@pytest.fixture(scope="module")
def batch() -> list[RequestRecord]:
    """Two thousand requests from seed 7."""
    return generate_requests(2000, seed=7, today=TODAY)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_generated_record_passes_validation(seed: int) -> None:
    """2,000 records per seed, no rejection with every key type allowed."""
    records = generate_requests(2000, seed=seed, today=TODAY)
    rejected = [(r.request_ref, x.code) for r in records
                for x in validate_record(r, today=TODAY, allowed_key_types=ALL_KEY_TYPES)]
    assert len(records) == 2000 and rejected == []


def test_records_still_pass_on_a_leap_day() -> None:
    """Ages computed from 29 February do not stray outside 22–60."""
    leap = dt.date(2028, 2, 29)
    records = generate_requests(500, seed=5, today=leap)
    assert all(validate_record(r, today=leap, allowed_key_types=["rsa2048"]) == [] for r in records)


def test_the_same_seed_gives_the_same_batch() -> None:
    """Deterministic per seed and date; another seed gives another batch."""
    assert generate_requests(300, seed=11, today=TODAY) == generate_requests(300, seed=11, today=TODAY)
    assert generate_requests(300, seed=11, today=TODAY) != generate_requests(300, seed=12, today=TODAY)


def test_citizen_ids_emails_and_refs_are_unique(batch: list[RequestRecord]) -> None:
    """No two requests share a CCCD or a mailbox; refs run HS-000001 upwards."""
    assert len({r.citizen_id for r in batch}) == len(batch)
    assert len({r.email for r in batch}) == len(batch)
    assert [r.request_ref for r in batch[:3]] == ["HS-000001", "HS-000002", "HS-000003"]
    assert batch[-1].request_ref == "HS-002000"


def test_each_unit_has_one_account_holder_and_one_chief_accountant_first(batch: list[RequestRecord]) -> None:
    """Units open with their two mandatory signers and stay within the Treasury's limits."""
    units: dict[str, list[RequestRecord]] = defaultdict(list)
    for record in batch:
        units[record.unit_code].append(record)
    complete = [members for members in units.values() if len(members) >= 2]
    assert len(complete) > 100
    for members in complete:
        assert [m.role for m in members[:2]] == [Role.account_holder, Role.chief_accountant]
        assert len({(m.organization, m.organizational_units, m.province) for m in members}) == 1
    assert all(len(code) == 7 and code.isdigit() for code in units)
    assert treasury_warnings(r for members in complete for r in members) == []


def test_names_are_family_middle_given_with_gendered_middle_names(batch: list[RequestRecord]) -> None:
    """Family name first, Thị only for women, Văn only for men, stored as NFC."""
    families = {name for name, _ in FAMILY_NAMES}
    for record in batch:
        words = record.full_name.split(" ")
        assert words[0] in families and 3 <= len(words) <= 4
        assert unicodedata.is_normalized("NFC", record.full_name)
        assert words[1] in MIDDLE_NAMES[record.sex]
        assert ("Thị" in words) <= (record.sex == Sex.female) and ("Văn" in words) <= (record.sex == Sex.male)
    share = Counter(r.full_name.split(" ")[0] for r in batch)["Nguyễn"] / len(batch)
    assert 0.3 < share < 0.46  # about 38 % of Vietnamese are Nguyễn


def test_emails_are_ascii_gov_vn_built_from_the_name(batch: list[RequestRecord]) -> None:
    """Given name plus initials, de-accented, at a gov.vn domain."""
    for record in batch:
        local, _, domain = record.email.partition("@")
        assert record.email.isascii() and domain.endswith(".gov.vn")
        assert local.startswith(ascii_fold(record.full_name.split(" ")[-1]).lower())


def test_phones_are_mobile_numbers_and_ages_span_a_career(batch: list[RequestRecord]) -> None:
    """Every phone normalises; ages on TODAY lie in 22–60; provinces are the 34."""
    ages = [TODAY.year - born.year - ((TODAY.month, TODAY.day) < (born.month, born.day))
            for born in (r.date_of_birth for r in batch)]
    assert all(normalise_phone(r.phone or "").startswith("+84") for r in batch)
    assert min(ages) >= 22 and max(ages) <= 60 and max(ages) - min(ages) > 30
    assert {r.province for r in batch} <= set(PROVINCES) and len(PROVINCES) == 34


def test_key_type_is_passed_through_and_an_unknown_one_refused() -> None:
    """Records carry the requested key type; a typo fails at once."""
    assert {r.key_type for r in generate_requests(20, key_type="ecdsa-p256", today=TODAY)} == {KeyType.ecdsa_p256}
    with pytest.raises(ValueError):
        generate_requests(1, key_type="rsa1024", today=TODAY)


def test_small_counts_are_exact() -> None:
    """Zero gives nothing; one gives the account holder of the first unit."""
    assert generate_requests(0, today=TODAY) == []
    (only,) = generate_requests(1, today=TODAY)
    assert only.role == Role.account_holder
