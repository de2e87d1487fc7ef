"""The request record: one row of a batch (DESIGN.md §4a), the intake contract."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Sex(StrEnum):
    """Sex as printed on the citizen ID; drives the CCCD century/sex digit."""

    male = "male"
    female = "female"


class Role(StrEnum):
    """The subscriber's role towards the State Treasury (Vai trò KBNN)."""

    account_holder = "account_holder"
    account_holder_delegate = "account_holder_delegate"
    chief_accountant = "chief_accountant"
    chief_accountant_delegate = "chief_accountant_delegate"
    staff = "staff"


class KeyType(StrEnum):
    """Key types the policy may allow; RSA-2048 is the default."""

    rsa2048 = "rsa2048"
    rsa3072 = "rsa3072"
    ecdsa_p256 = "ecdsa-p256"


class RequestRecord(BaseModel):
    """One person's certificate request, as the managing agency filed it.

    Field names are the public contract shared by JSON lines, CSV and the xlsx
    template. Shape is checked here; the domain rules (CCCD, names, e-mail …) live in
    ``factory.validation`` so that each rule has its own reason code.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    request_ref: str = Field(min_length=1, max_length=64, description="Mã hồ sơ: the agency's own reference")
    full_name: str = Field(min_length=1, max_length=128, description="Họ và tên")
    citizen_id: str = Field(min_length=1, max_length=32, description="Số CCCD, 12 digits")
    date_of_birth: dt.date = Field(description="Ngày sinh, ISO date")
    sex: Sex = Field(description="Giới tính")
    email: str = Field(min_length=1, max_length=254, description="Thư điện tử")
    phone: str | None = Field(default=None, max_length=32, description="Số điện thoại")
    position: str = Field(min_length=1, max_length=128, description="Chức vụ")
    role: Role = Field(description="Vai trò KBNN")
    unit_code: str = Field(min_length=1, max_length=16, description="Mã ĐVQHNS, 7 digits")
    organization: str = Field(min_length=1, max_length=128, description="Cơ quan (subject O)")
    organizational_units: tuple[str, ...] = Field(default=(), max_length=4, description="Đơn vị, outermost first")
    province: str = Field(min_length=1, max_length=64, description="Tỉnh/Thành phố")
    key_type: KeyType = Field(default=KeyType.rsa2048, description="Loại khóa")
