"""Intake as operators use it: the template, the agency registry, endorsed submission
through the real pipeline (redis-server, SoftHSM2 workers, SQLite)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook

from certfactory.embedded import RedisServer, WorkerPools
from certfactory.settings import Settings
from factory.endorsement import sign_detached
from factory.ledger import Ledger
from factory.spreadsheets import LABELS
from factory.synthetic import generate_requests
from factory.tables import batches, certificates, devices, requests
from tests.agency import endorsed, make_head, register
from tests.conftest import run_cli
from tests.test_exactly_once import _wait_for

DATA = Path(__file__).parent / "data"
PAPER = ["--endorsement-letter", "123/BTC-KHTC/2026-01-05", "--operator", "Lê Văn Kiểm"]


def _xlsx(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A batch in the template's layout: Vietnamese headers, one row per record."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(list(LABELS.values()))
    for row in rows:
        sheet.append([row.get(field) if not isinstance(row.get(field), list) else "; ".join(row[field])
                      for field in LABELS])
    workbook.save(path)
    return path


def test_the_template_has_the_headers_pick_lists_and_an_example_that_is_never_issued(tmp_path: Path) -> None:
    """`template` writes the §4a headers with pick lists; the example row left in is refused by name."""
    home, template = tmp_path / "var", tmp_path / "mẫu.xlsx"
    run_cli(home, "template", str(template))
    sheet = load_workbook(template)["Yêu cầu"]
    assert [cell.value for cell in sheet[1]] == list(LABELS.values())
    lists = {str(rule.sqref).split(":")[0][0] for rule in sheet.data_validations.dataValidation}
    assert lists == {"E", "I", "N"}  # Giới tính, Vai trò KBNN, Loại khóa
    register(home, tmp_path / "heads")
    shown = json.loads(run_cli(home, "submit", str(template), "--agency", "BTC", *PAPER, "--dry-run",
                               "--json").stdout)
    assert [(r["status"], r["reasons"][0]["code"]) for r in shown["rows"]] == [("rejected", "row.example")]
    assert run_cli(home, "template", str(tmp_path / "t.csv"), check=False).returncode == 2


def test_agencies_import_refuses_expired_and_unreadable_heads_with_the_reason(tmp_path: Path) -> None:
    """Rows with an expired or a non-PEM head certificate are refused by reason; the good row
    is registered, `agencies list --json` shows it, and importing again updates in place."""
    home, folder = tmp_path / "var", tmp_path / "registry"
    good, _, _ = make_head(folder)
    expired, _, _ = make_head(folder, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=400), days=30)
    (folder / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    registry = folder / "agencies.csv"
    header = "agency_code,name,parent,head_name,head_position,head_certificate,pickup_address,pickup_hours\n"
    registry.write_text(header + f"BTC,Bộ Tài chính,,Nguyễn Văn Thủ,Bộ trưởng,{good.name},,\n"
                        f"BYT,Bộ Y tế,,Đào Hồng Lan,Bộ trưởng,{expired.name},,\n"
                        "BXD,Bộ Xây dựng,,Trần Hồng Minh,Bộ trưởng,broken.pem,,\n", encoding="utf-8")
    result = run_cli(home, "agencies", "import", str(registry), "--json", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["added"] == ["BTC"]
    reasons = {r["agency_code"]: r["reason"] for r in report["refused"]}
    assert "expired on" in reasons["BYT"] and "not a PEM certificate" in reasons["BXD"]
    listed = json.loads(run_cli(home, "agencies", "list", "--json").stdout)["agencies"]
    assert [(a["agency_code"], a["head_name"]) for a in listed] == [("BTC", "Nguyễn Văn Thủ")]
    registry.write_text(header + f"BTC,Bộ Tài chính,,Nguyễn Văn Mới,Bộ trưởng,{good.name},,\n", encoding="utf-8")
    assert json.loads(run_cli(home, "agencies", "import", str(registry), "--json").stdout)["updated"] == ["BTC"]
    listed = json.loads(run_cli(home, "agencies", "list", "--json").stdout)["agencies"]
    assert [a["head_name"] for a in listed] == ["Nguyễn Văn Mới"]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home where agency BTC is registered (and nothing is ever recorded)."""
    folder = tmp_path_factory.mktemp("registered")
    register(folder / "var", folder / "heads")
    return folder / "var"


@pytest.mark.parametrize(("name", "exit_code", "said"), [
    ("intake-cp1258-not-utf8.csv", 1, "windows-1258"),
    ("intake-utf16-unicode-text.csv", 1, "UTF-16"),
    ("intake-damaged-not-a-zip.xlsx", 1, "not a readable .xlsx"),
    ("intake-unknown-column.csv", 1, "unknown column"),
    ("binary.jsonl", 0, "row.unreadable"),
])
def test_an_unreadable_file_is_a_message_never_a_traceback(registered: Path, tmp_path: Path, name: str,
                                                           exit_code: int, said: str) -> None:
    """A file in another encoding, damaged or with foreign columns is refused whole naming
    the problem; unreadable lines of a JSON-lines batch are rejected rows; nothing is recorded."""
    home = registered
    batch = tmp_path / name
    if name == "binary.jsonl":
        batch.write_bytes(bytes(range(256)) * 4 + b"\n{\"request_ref\": [}\n")
    else:
        shutil.copy(DATA / name, batch)
    result = run_cli(home, "submit", str(batch), "--agency", "BTC", *PAPER, "--dry-run", check=False)
    assert result.returncode == exit_code and said in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(run_cli(home, "status", "--json").stdout)["total"] == 0


def test_an_unendorsed_or_unregistered_batch_is_refused_whole(registered: Path, tmp_path: Path) -> None:
    """No endorsement, an unknown agency, a letter without its operator: exit 1 with the reason."""
    home = registered
    batch = tmp_path / "batch.jsonl"
    batch.write_text(generate_requests(1, seed=3)[0].model_dump_json() + "\n")
    for options, reason in (([], "batch not endorsed"), (PAPER[:2], "paper endorsement incomplete")):
        result = run_cli(home, "submit", str(batch), "--agency", "BTC", *options, "--json", check=False)
        assert result.returncode == 1 and json.loads(result.stdout)["code"] == reason
        assert reason in result.stderr and "Traceback" not in result.stderr
    result = run_cli(home, "submit", str(batch), "--agency", "NOBODY", *PAPER, check=False)
    assert result.returncode == 1 and "agency not registered" in result.stderr


# Each row breaks one rule; the value is (field, change, the reason code expected).
MISTAKES: dict[str, tuple[str, Any, str]] = {
    "HS-NO-NAME": ("full_name", None, "field.missing"),
    "HS-CONTROL": ("full_name", "Nguyễn\u200bVăn An", "full_name.control_character"),
    "HS-LOOKALIKE": ("full_name", "\u00d0ặng Văn An", "full_name.lookalike"),
    "HS-SCRIPT": ("full_name", "Nguyễn Văn An2", "full_name.script"),
    "HS-ONE-WORD": ("full_name", "Nguyễn", "full_name.words"),
    "HS-TWO-TONES": ("full_name", "Nguyễn Văn Hoằà", "full_name.tone_marks"),
    "HS-LONG-NAME": ("full_name", " ".join(["Nguyễn Thị Phương"] * 6), "full_name.too_long"),
    "HS-CCCD-11": ("citizen_id", "38093015572", "citizen_id.format"),
    "HS-CMND": ("citizen_id", "038093015", "citizen_id.cmnd"),
    "HS-PROVINCE": ("citizen_id", "003{rest}", "citizen_id.province"),
    "HS-CENTURY": ("citizen_id", "{ppp}7{rest3}", "citizen_id.century_sex"),
    "HS-YEAR": ("citizen_id", "{ppp}{g}{yy1}{rest5}", "citizen_id.birth_year"),
    "HS-TOO-YOUNG": ("date_of_birth", "2015-01-01", "date_of_birth.age"),
    "HS-DATE-TEXT": ("date_of_birth", "04/05/1993", "field.invalid"),
    "HS-EMAIL": ("email", "an@@mof.gov.vn", "email.format"),
    "HS-PHONE": ("phone", "0123 456", "phone.format"),
    "HS-POSITION": ("position", "Chuyên\u200eviên", "position.control_character"),
    "HS-ROLE": ("role", "giám đốc", "field.invalid"),
    "HS-UNIT": ("unit_code", "104766", "unit_code.format"),
    "HS-KEY-TYPE": ("key_type", "rsa3072", "key_type.not_allowed"),
}


def _mistaken(base: dict[str, Any], ref: str) -> dict[str, Any]:
    field, value, _ = MISTAKES[ref]
    cid = base["citizen_id"]
    if isinstance(value, str):
        yy1 = f"{(int(cid[4:6]) + 1) % 100:02d}"
        value = value.format(rest=cid[3:], ppp=cid[:3], rest3=cid[4:], g=cid[3], yy1=yy1, rest5=cid[6:])
    return {**base, "request_ref": ref, field: value}


@pytest.mark.integration
def test_every_kind_of_mistake_is_rejected_while_every_good_row_is_issued_once(
        tmp_path: Path, redis_server: RedisServer, tools: dict[str, str]) -> None:
    """One signed xlsx batch with a row per mistake: each is rejected with its code, the good
    rows reach the agency's pick-up; the same file again issues nothing; a copy signed by
    another key, or an unendorsed one, is refused whole and records nothing."""
    home = tmp_path / "var"
    env = {"CERTFACTORY_REDIS_URL": redis_server.url, "CERTFACTORY_ALLOWED_KEY_TYPES": "rsa2048,ecdsa-p256"}
    run_cli(home, "init", **env)
    records = [r.model_dump(mode="json") for r in generate_requests(len(MISTAKES) + 4, seed=21,
                                                                        key_type="ecdsa-p256")]
    earlier, good, spare = records[0], records[1:3], records[3:]
    rows = [*good, *(_mistaken(base, ref) for base, ref in zip(spare, MISTAKES, strict=False))]
    rows.append({**good[0], "request_ref": "HS-TWIN"})  # the same person again in the batch
    rows.append({**earlier, "request_ref": "HS-IN-FLIGHT", "full_name": earlier["full_name"]})
    first = tmp_path / "first.jsonl"
    first.write_text(json.dumps(earlier, ensure_ascii=False) + "\n", encoding="utf-8")
    batch = _xlsx(tmp_path / "đợt-1.xlsx", rows)
    settings = Settings(home=home, redis_url=redis_server.url, worker_processes=1)
    ledger = Ledger.connect(settings.ledger_url)
    pools = WorkerPools(settings, redis_server.url).start()
    try:
        run_cli(home, "submit", str(first), "--agency", "BTC", *endorsed(home, first), **env)
        signature = endorsed(home, batch, "BTC", **env)  # registers BTC's head anew, then signs
        report = json.loads(run_cli(home, "submit", str(batch), "--agency", "BTC", *signature, "--json",
                                    **env).stdout)
        _wait_for(ledger, report["batch_id"], "awaiting_activation", 2)
        again = json.loads(run_cli(home, "submit", str(batch), "--agency", "BTC", *signature, "--json",
                                   **env).stdout)
        _, impostor_key, impostor_cert = make_head(tmp_path / "impostor", "Kẻ Mạo Danh")
        other = _xlsx(tmp_path / "đợt-2.xlsx", [spare[-1]])  # new rows, signed by someone else
        forged = tmp_path / "forged.p7s"
        forged.write_bytes(sign_detached(other.read_bytes(), impostor_cert, impostor_key))
        refused = run_cli(home, "submit", str(other), "--agency", "BTC", "--signature", str(forged), check=False,
                          **env)
        dry = json.loads(run_cli(home, "submit", str(batch), "--agency", "BTC", *PAPER, "--dry-run", "--json",
                                 **env).stdout)
    finally:
        pools.stop()
    by_ref = {row["request_ref"]: row for row in report["rows"]}
    assert [by_ref[r["request_ref"]]["status"] for r in good] == ["accepted", "accepted"]
    for ref, (field, _, code) in MISTAKES.items():
        reasons = by_ref[ref]["reasons"]
        assert by_ref[ref]["status"] == "rejected" and code in [r["code"] for r in reasons], (ref, reasons)
        assert field in [r["field"] for r in reasons], (ref, reasons)
    assert [r["code"] for r in by_ref["HS-TWIN"]["reasons"]] == ["citizen_id.duplicate_in_batch"]
    assert [r["code"] for r in by_ref["HS-IN-FLIGHT"]["reasons"]] == ["citizen_id.in_flight"]
    assert (report["accepted"], report["rejected"]) == (2, len(MISTAKES) + 2)
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    assert refused.returncode == 1 and "signed by a key other than the registered head's" in refused.stderr
    assert dry["accepted"] == 0 and dry["duplicates"] == 2  # checked, endorsement included; nothing recorded
    assert (batch.parent / "đợt-1.report.xlsx").exists()
    status = json.loads(run_cli(home, "status", "--json").stdout)
    assert status["total"] == 1 + len(rows)  # the first batch's row, then each row of the batch once
    with ledger.engine.connect() as connection:
        assert len(connection.execute(batches.select()).all()) == 3  # first, the batch, the batch again
        assert connection.execute(requests.select().where(
            requests.c.citizen_id == spare[-1]["citizen_id"])).first() is None
        assert len(connection.execute(certificates.select()).all()) == 3
        assert len(connection.execute(devices.select().where(devices.c.request_id.is_not(None))).all()) == 3
