"""Write the JSON Schema files of the public models (``python -m schemas.export``)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.messages import StageMessage
from schemas.request import RequestRecord
from schemas.status import BatchSubmitted, StatusReport

FOLDER = Path(__file__).parent / "json"
MODELS: dict[str, type[BaseModel]] = {
    "request-record": RequestRecord,
    "stage-message": StageMessage,
    "batch-submitted": BatchSubmitted,
    "status-report": StatusReport,
}


def rendered() -> dict[str, str]:
    """File name → JSON Schema text of every public model."""
    return {f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2, ensure_ascii=False) + "\n"
            for name, model in MODELS.items()}


def main() -> None:
    """Rewrite the committed schema files."""
    FOLDER.mkdir(exist_ok=True)
    for file_name, text in rendered().items():
        (FOLDER / file_name).write_text(text, encoding="utf-8")
        print(f"wrote schemas/json/{file_name}")


if __name__ == "__main__":
    main()
