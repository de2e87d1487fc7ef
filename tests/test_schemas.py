"""The committed JSON Schema files are the models' schemas (upstream systems rely on them)."""

from schemas.export import FOLDER, rendered


def test_committed_json_schemas_match_the_models() -> None:
    """Every model's schema file is committed and current (`make schemas` rewrites them)."""
    for file_name, text in rendered().items():
        path = FOLDER / file_name
        assert path.exists(), f"{path} missing: run `make schemas`"
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run `make schemas`"


def test_request_record_schema_forbids_unknown_fields() -> None:
    """An upstream system sending a field we do not know gets it refused, not ignored."""
    import json

    schema = json.loads((FOLDER / "request-record.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert {"request_ref", "full_name", "citizen_id", "role", "unit_code"} <= set(schema["required"])
