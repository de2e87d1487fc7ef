"""Intake commands (issue 3): `template`, `submit` with its endorsement, and the agency
registry's `agencies import` and `agencies list`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


def _submit_text(report: dict[str, Any], file: Path, dry_run: bool) -> str:
    from factory.agency_report import report_path

    lines = [f"{'dry run, nothing enqueued: ' if dry_run else ''}batch {report['batch_id']}: "
             f"{report['accepted']} accepted, {report['rejected']} rejected, {report['duplicates']} already known"]
    for row in report["rows"]:
        if row["status"] == "rejected":
            lines += [f"  row {row['row']} ({row['request_ref']}): {reason['message']} [{reason['code']}]"
                      for reason in row["reasons"]]
    lines += [f"  warning: {warning}" for warning in report["warnings"]]
    lines.append(f"report: {report_path(file)}")
    return "\n".join(lines)


def register(main: click.Group, agencies: click.Group) -> None:
    """Adds this module's commands to the ``certfactory`` group and its ``agencies`` subgroup."""
    from certfactory.cli import _print, _settings

    @main.command()
    @click.argument("file", type=click.Path(dir_okay=False, writable=True, path_type=Path))
    def template(file: Path) -> None:
        """Write the batch template FILE.xlsx: Vietnamese headers, pick lists, an example row."""
        from factory.spreadsheets import write_template

        if file.suffix.lower() != ".xlsx":
            raise click.BadParameter(f"{file.name}: the template is an .xlsx workbook", param_hint="FILE")
        try:
            write_template(file)
        except OSError as error:
            raise click.ClickException(f"{file}: cannot be written ({error.strerror})") from None
        click.echo(f"template written: {file} (delete the example row before filling it in)")

    @main.command()
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--agency", "agency_code", required=True, help="Code of the managing agency filing the batch.")
    @click.option("--signature", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="Detached CMS/PKCS#7 signature (.p7s) of FILE by the agency's registered head.")
    @click.option("--endorsement-letter", metavar="NUMBER/DATE",
                  help="Paper endorsement instead: the letter's number and ISO date, e.g. 123/BTC-KHTC/2026-03-02.")
    @click.option("--operator", metavar="NAME", help="With --endorsement-letter: who at the CA checked the letter.")
    @click.option("--dry-run", is_flag=True, help="Run every check, the endorsement included; enqueue nothing.")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    def submit(file: Path, agency_code: str, signature: Path | None, endorsement_letter: str | None,
               operator: str | None, dry_run: bool, as_json: bool) -> None:
        """Submit a batch FILE (.xlsx, .csv or .jsonl) endorsed by the agency's head.

        Exit 0 when the batch was accepted (even with rejected rows: see the report
        FILE's name + .report.xlsx), 1 when it was refused whole."""
        from certfactory import operations, wiring
        from factory.endorsement import EndorsementRefused
        from factory.spreadsheets import BatchFileError

        if signature is not None and (endorsement_letter or operator):
            raise click.UsageError("give --signature or --endorsement-letter with --operator, not both")
        settings = _settings()
        try:
            data = signature.read_bytes() if signature is not None else None
        except OSError as error:
            raise click.ClickException(f"{signature}: cannot be read ({error.strerror})") from None
        try:
            report = operations.submit(settings, wiring.ledger(settings), file, agency_code, signature=data,
                                       endorsement_letter=endorsement_letter, operator=operator, dry_run=dry_run)
        except (EndorsementRefused, BatchFileError, OSError) as error:  # refused whole
            message = error.diagnostics() if not isinstance(error, OSError) else \
                f"{file}: cannot be read ({error.strerror or error})"
            if as_json:
                code = getattr(error, "reason", None) or getattr(error, "code", "unreadable")
                click.echo(json.dumps({"batch_id": None, "refused": message, "code": code}, ensure_ascii=False))
            click.echo(f"Error: {message}", err=True)
            sys.exit(1)
        _print(report, as_json, _submit_text(report, file, dry_run))

    @agencies.command("import")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    def agencies_import(file: Path, as_json: bool) -> None:
        """Import or update agencies from FILE (.csv or .xlsx; columns agency_code, name,
        parent, head_name, head_position, head_certificate, pickup_address, pickup_hours;
        head_certificate is a PEM file relative to FILE's folder). Exit 1 if a row was refused."""
        from certfactory import wiring
        from factory.agencies import import_agencies

        try:
            report = import_agencies(wiring.ledger(_settings()), file)
        except OSError as error:
            raise click.ClickException(f"{file}: cannot be read ({error.strerror or error})") from None
        lines = [f"{file.name}: {len(report.added)} added, {len(report.updated)} updated, "
                 f"{len(report.unchanged)} unchanged, {len(report.refused)} refused"]
        lines += [f"  row {r['row']} ({r['agency_code']}): {r['reason']}" for r in report.refused]
        _print(report.as_dict(), as_json, "\n".join(lines))
        if report.refused:
            sys.exit(1)

    @agencies.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    def agencies_list(as_json: bool) -> None:
        """The registered agencies, their heads and the heads' certificates."""
        from certfactory import wiring
        from factory.agencies import list_agencies

        found = [agency.summary() for agency in list_agencies(wiring.ledger(_settings()))]
        text = "\n".join(f"{a['agency_code']}  {a['name']}  head: {a['head_name']} ({a['head_position']}), "
                         f"certificate until {a['head_certificate_not_after'][:10]}" for a in found)
        _print({"agencies": found}, as_json, text or "no agency registered")
