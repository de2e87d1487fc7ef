"""Realistic synthetic certificate requests (DOMAIN.md "Realistic data").

Written by hand rather than with Faker, whose vi_VN locale puts names in the wrong
order, adds honorifics and makes invalid phone numbers. Requests come grouped by budget
unit, as a managing agency files them: the account holder, the chief accountant, then
delegates and staff. Every record passes ``factory.validation.validate_record``.
"""

from __future__ import annotations

import datetime as dt
import random
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from factory.validation import PROVINCE_CODES
from schemas import KeyType, RequestRecord, Role, Sex

# Family names with rough shares of the population (percent).
FAMILY_NAMES: tuple[tuple[str, float], ...] = (
    ("Nguyễn", 38), ("Trần", 11), ("Lê", 9.5), ("Phạm", 7), ("Hoàng", 3.5), ("Huỳnh", 2),
    ("Phan", 4.5), ("Vũ", 2.5), ("Võ", 1.5), ("Đặng", 2.1), ("Bùi", 2), ("Đỗ", 1.4),
    ("Hồ", 1.3), ("Ngô", 1.3), ("Dương", 1), ("Lý", 0.5), ("Đinh", 0.8), ("Trịnh", 0.6),
    ("Mai", 0.5), ("Cao", 0.4), ("Tạ", 0.3), ("Lương", 0.3),
)
MIDDLE_NAMES = {
    Sex.male: ("Văn", "Văn", "Đức", "Minh", "Quang", "Hữu", "Công", "Xuân", "Ngọc", "Thanh", "Tuấn", "Đình"),
    Sex.female: ("Thị", "Thị", "Thị", "Ngọc", "Minh", "Thu", "Thanh", "Phương", "Hồng", "Kim", "Bích", "Thùy"),
}
GIVEN_NAMES = {
    Sex.male: ("An", "Anh", "Bình", "Cường", "Dũng", "Duy", "Đạt", "Hải", "Hiếu", "Hoàng", "Hùng",
               "Huy", "Khánh", "Long", "Minh", "Nam", "Phong", "Phúc", "Quân", "Sơn", "Thắng",
               "Thành", "Trung", "Tuấn", "Việt", "Vinh", "Hòa", "Khoa", "Lâm", "Nghĩa"),
    Sex.female: ("Anh", "Chi", "Dung", "Hà", "Hạnh", "Hằng", "Hoa", "Hương", "Huyền", "Lan",
                 "Linh", "Loan", "Mai", "Nga", "Ngân", "Nhung", "Oanh", "Phương", "Quỳnh", "Thảo",
                 "Thủy", "Trang", "Vân", "Yến", "Thúy", "Hòa", "Ngọc", "Tâm", "Giang", "Khuê"),
}
# Ministries since 2025-03-01, with a plausible mail domain each.
MINISTRIES: tuple[tuple[str, str], ...] = (
    ("Bộ Quốc phòng", "mod.gov.vn"), ("Bộ Công an", "bocongan.gov.vn"),
    ("Bộ Ngoại giao", "mofa.gov.vn"), ("Bộ Nội vụ", "moha.gov.vn"), ("Bộ Tư pháp", "moj.gov.vn"),
    ("Bộ Tài chính", "mof.gov.vn"), ("Bộ Công Thương", "moit.gov.vn"),
    ("Bộ Nông nghiệp và Môi trường", "mae.gov.vn"), ("Bộ Xây dựng", "moc.gov.vn"),
    ("Bộ Văn hóa, Thể thao và Du lịch", "bvhttdl.gov.vn"), ("Bộ Khoa học và Công nghệ", "mst.gov.vn"),
    ("Bộ Giáo dục và Đào tạo", "moet.gov.vn"), ("Bộ Y tế", "moh.gov.vn"),
    ("Bộ Dân tộc và Tôn giáo", "mdtg.gov.vn"), ("Ngân hàng Nhà nước Việt Nam", "sbv.gov.vn"),
    ("Thanh tra Chính phủ", "thanhtra.gov.vn"), ("Văn phòng Chính phủ", "chinhphu.gov.vn"),
)
# The 34 provinces since 2025-07-01; the six centrally-run cities first.
CITIES = ("Hà Nội", "Huế", "Hải Phòng", "Đà Nẵng", "Hồ Chí Minh", "Cần Thơ")
PROVINCES = CITIES + (
    "Lai Châu", "Điện Biên", "Sơn La", "Lạng Sơn", "Quảng Ninh", "Thanh Hóa", "Nghệ An",
    "Hà Tĩnh", "Cao Bằng", "Tuyên Quang", "Lào Cai", "Thái Nguyên", "Phú Thọ", "Bắc Ninh",
    "Hưng Yên", "Ninh Bình", "Quảng Trị", "Quảng Ngãi", "Gia Lai", "Khánh Hòa", "Lâm Đồng",
    "Đắk Lắk", "Đồng Nai", "Tây Ninh", "Vĩnh Long", "Đồng Tháp", "Cà Mau", "An Giang",
)
# (organizational units, the head's title) inside a ministry and inside a province.
MINISTRY_UNITS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("Vụ Kế hoạch - Tài chính",), "Vụ trưởng"), (("Vụ Tổ chức cán bộ",), "Vụ trưởng"),
    (("Vụ Pháp chế",), "Vụ trưởng"), (("Văn phòng Bộ",), "Chánh Văn phòng"),
    (("Cục Công nghệ thông tin",), "Cục trưởng"), (("Cục Kế hoạch - Tài chính",), "Cục trưởng"),
    (("Cục Công nghệ thông tin", "Trung tâm Dữ liệu"), "Giám đốc Trung tâm"),
)
PROVINCE_UNITS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("Sở Tài chính",), "Giám đốc Sở"), (("Sở Nội vụ",), "Giám đốc Sở"),
    (("Sở Y tế",), "Giám đốc Sở"), (("Văn phòng UBND",), "Chánh Văn phòng"),
    (("Sở Giáo dục và Đào tạo", "Trường THPT Chu Văn An"), "Hiệu trưởng"),
    (("Sở Giáo dục và Đào tạo", "Trường THPT Lê Quý Đôn"), "Hiệu trưởng"),
    (("UBND phường Trung tâm",), "Chủ tịch UBND"), (("UBND xã Tân Lập",), "Chủ tịch UBND"),
)
STAFF_TITLES = ("Chuyên viên", "Chuyên viên", "Chuyên viên chính", "Trưởng phòng", "Phó Trưởng phòng",
                "Kế toán viên")
# Mobile prefixes in use (Viettel, MobiFone, VinaPhone, Vietnamobile, Gmobile).
MOBILE_PREFIXES = ("032", "033", "034", "035", "036", "037", "038", "039", "086", "096", "097",
                   "098", "070", "076", "077", "078", "079", "089", "090", "093", "081", "082",
                   "083", "084", "085", "088", "091", "094", "056", "058", "092", "059", "099")
_PROVINCE_CODES = tuple(sorted(PROVINCE_CODES))  # sorted: sets iterate in hash order


def ascii_fold(text: str) -> str:
    """Strip Vietnamese diacritics: "Đặng Thị Thúy" → "Dang Thi Thuy"."""
    text = text.replace("Đ", "D").replace("đ", "d")
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def _shift_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a common year
        return day.replace(year=day.year - years, day=28)


@dataclass(frozen=True)
class _Unit:
    """A budget unit (đơn vị có quan hệ với ngân sách) and what its members share."""

    code: str
    organization: str
    ous: tuple[str, ...]
    province: str
    domain: str
    head: str  # the head's title, printed as the account holder's position


class _Generator:
    """One call's state: the random source and what must stay unique."""

    def __init__(self, seed: int, key_type: KeyType, today: dt.date) -> None:
        self.rng = random.Random(seed)
        self.key_type = key_type
        self.today = today
        self.citizen_ids: set[str] = set()
        self.emails: set[str] = set()
        self.unit_codes: set[str] = set()
        self.families = [name for name, _ in FAMILY_NAMES]
        self.family_weights = [share for _, share in FAMILY_NAMES]

    def unique(self, seen: set[str], make: Callable[[], str]) -> str:
        """``make()`` until it gives a value not in ``seen``; record it."""
        while (value := make()) in seen:
            pass
        seen.add(value)
        return value

    def birth_date(self, youngest: int, oldest: int) -> dt.date:
        """A date of birth giving an age in [youngest, oldest] today."""
        latest = _shift_years(self.today, youngest)
        earliest = _shift_years(self.today, oldest + 1) + dt.timedelta(days=1)
        return dt.date.fromordinal(self.rng.randint(earliest.toordinal(), latest.toordinal()))

    def citizen_id(self, born: dt.date, sex: Sex) -> str:
        century_sex = (born.year // 100 - 19) * 2 + (sex == Sex.female)
        prefix = f"{self.rng.choice(_PROVINCE_CODES)}{century_sex}{born.year % 100:02d}"
        return self.unique(self.citizen_ids, lambda: prefix + f"{self.rng.randrange(10**6):06d}")

    def name(self, sex: Sex) -> tuple[str, str, str]:
        family = self.rng.choices(self.families, self.family_weights)[0]
        middle = self.rng.choice(MIDDLE_NAMES[sex])
        if self.rng.random() < 0.15:  # "Nguyễn Thị Thu Hà": two middle names are common
            middle += " " + self.rng.choice(MIDDLE_NAMES[sex][2:])
        return family, middle, self.rng.choice(GIVEN_NAMES[sex])

    def email(self, family: str, middle: str, given: str, domain: str) -> str:
        # The usual gov.vn pattern: given name, then initials of family and middle names.
        base = (ascii_fold(given) + "".join(w[0] for w in ascii_fold(f"{family} {middle}").split())).lower()
        address, n = f"{base}@{domain}", 1
        while address in self.emails:  # namesakes get annv2@, annv3@ … as mail admins do
            n += 1
            address = f"{base}{n}@{domain}"
        self.emails.add(address)
        return address

    def person(self, ref: int, role: Role, position: str, unit: _Unit) -> RequestRecord:
        sex = self.rng.choice((Sex.male, Sex.female))
        family, middle, given = self.name(sex)
        # Heads and chief accountants are senior; delegates and staff span a career.
        youngest, oldest = {Role.account_holder: (38, 60), Role.chief_accountant: (30, 60)}.get(role, (22, 60))
        born = self.birth_date(youngest, oldest)
        return RequestRecord(
            request_ref=f"HS-{ref:06d}",
            full_name=f"{family} {middle} {given}",
            citizen_id=self.citizen_id(born, sex),
            date_of_birth=born,
            sex=sex,
            email=self.email(family, middle, given, unit.domain),
            phone=self.rng.choice(MOBILE_PREFIXES) + f"{self.rng.randrange(10**7):07d}",
            position=position,
            role=role,
            unit_code=unit.code,
            organization=unit.organization,
            organizational_units=unit.ous,
            province=unit.province,
            key_type=self.key_type,
        )

    def unit(self) -> _Unit:
        """A new budget unit with a unique code."""
        code = self.unique(self.unit_codes, lambda: str(self.rng.randint(1_000_000, 1_999_999)))
        if self.rng.random() < 0.5:
            organization, domain = self.rng.choice(MINISTRIES)
            ous, head = self.rng.choice(MINISTRY_UNITS)
            province = "Hà Nội"  # ministries sit in the capital
        else:
            province = self.rng.choice(PROVINCES)
            kind = "thành phố" if province in CITIES else "tỉnh"
            organization = f"UBND {kind} {province}"
            domain = ascii_fold(province).replace(" ", "").lower() + ".gov.vn"
            ous, head = self.rng.choice(PROVINCE_UNITS)
        return _Unit(code, organization, ous, province, domain, head)

    def roster(self, head: str) -> list[tuple[Role, str]]:
        """Who a unit files for: the two mandatory signers, then delegates and staff."""
        members = [(Role.account_holder, head), (Role.chief_accountant, "Kế toán trưởng")]
        # The Treasury takes up to 3 delegates for the first signature, 2 for the second.
        members += [(Role.account_holder_delegate, f"Phó {head}")] * self.rng.randint(0, 3)
        members += [(Role.chief_accountant_delegate, "Kế toán viên")] * self.rng.randint(0, 2)
        members += [(Role.staff, self.rng.choice(STAFF_TITLES)) for _ in range(self.rng.randint(0, 3))]
        return members


def generate_requests(
    count: int, *, seed: int = 0, key_type: str = "rsa2048", today: dt.date | None = None
) -> list[RequestRecord]:
    """``count`` valid, realistic requests, the same for the same seed and ``today``.

    Citizen IDs, e-mails and unit codes are unique within the call. ``today`` fixes the
    ages (22–60); it defaults to the current date, so pass it for reproducible output.
    The last unit is cut short when ``count`` runs out.
    """
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    gen = _Generator(seed, KeyType(key_type), today or dt.date.today())
    records: list[RequestRecord] = []
    while len(records) < count:
        unit = gen.unit()
        for role, position in gen.roster(unit.head)[: count - len(records)]:
            records.append(gen.person(len(records) + 1, role, position, unit))
    return records
