"""Benchmark: build and sign the issuing CA's CRL with N certificates on hold.

Issue 7 wants CRL regeneration off the hot path: the CA pool re-signs it at most once
per ``workers.actors.CRL_REFRESH_MS`` whatever the batch size, so what matters is the
cost of one CRL as the batch grows (it must stay linear: a 50,000-certificate batch on
hold is a 50,000-entry CRL). ``first`` is a fresh process, ``again`` a process that
built the previous CRL (entries are cached). The key is a software P-256 key: the one
signature a CRL needs costs the same on the token, the entries are what grows.
Run: ``.venv/bin/python bench/crl.py [--sizes 5000 50000]`` → bench/results/crl.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from factory import revocation  # noqa: E402
from factory.ca import new_serial  # noqa: E402
from factory.ledger import Ledger  # noqa: E402
from factory.tables import certificates  # noqa: E402
from tests.softca import SoftCA  # noqa: E402


def measure(size: int, folder: Path) -> dict[str, float | int]:
    """One ledger with ``size`` held certificates; two CRLs built from it."""
    ledger = Ledger.connect(f"sqlite:///{folder / f'ledger-{size}.sqlite'}")
    now = dt.datetime.now(dt.UTC)
    with ledger.transaction() as connection:
        connection.execute(insert(certificates), [
            {"serial": f"{new_serial():032x}", "request_id": f"{i:032x}", "der": b"-", "status": "hold",
             "not_before": now, "created_at": now} for i in range(size)])
    authority = SoftCA.create()
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        crl = revocation.build_crl(ledger, authority.issuing, authority.issuing_key, now,
                                   now + dt.timedelta(hours=24))
        timings.append(time.perf_counter() - started)
    ledger.close()
    return {"entries": len(crl), "first_seconds": round(timings[0], 3), "again_seconds": round(timings[1], 3),
            "der_bytes": len(crl.public_bytes(Encoding.DER))}


def main() -> None:
    """Measure and write bench/results/crl.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = {str(size): measure(size, Path(folder)) for size in args.sizes}
    out = ROOT / "bench" / "results" / "crl.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    body = {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
            "machine": platform.machine(), "results": results}
    out.write_text(json.dumps(body, indent=1) + "\n")
    print(json.dumps(body, indent=1))


if __name__ == "__main__":
    main()
