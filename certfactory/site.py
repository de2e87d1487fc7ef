"""The public repository over HTTP: certificates, CA certificates, the CRL, a search and
a plain Vietnamese page (server-rendered, a GET form: works without JavaScript).

Files are served from ``$CERTFACTORY_HOME/repository`` by whitelisted names only; the
search reads the repository's ``index.json`` (what publication wrote), re-read when it
changes. Names match without diacritics and case: "nguyen van an" finds "Nguyễn Văn An".
"""

from __future__ import annotations

import html
import json
import re
import threading
import unicodedata
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from schemas.api import ErrorMessage, PublishedCertificate, SearchResults

MEDIA_TYPES = {".cer": "application/pkix-cert", ".crl": "application/pkix-crl", ".pem": "application/x-pem-file"}
PAGE_LIMIT = 200
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")


def fold(text: str) -> str:
    """Lower case, no diacritics, đ → d, single spaces: how names are compared."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def matches(entry: dict[str, Any], query: str) -> bool:
    """Whether an index entry answers ``query``: every word of it starts a word of the
    name or organisation (accents and case ignored), or it is the agency code, the
    serial, or the SHA-256 (hex) of the holder's CCCD."""
    lowered = query.strip().lower()
    if _HEX64.fullmatch(lowered):
        return bool(entry.get("citizen_id_sha256") == lowered)
    if _HEX32.fullmatch(lowered) and entry.get("serial") == lowered:
        return True
    if lowered.casefold() == str(entry.get("agency_code", "")).casefold():
        return True
    words = fold(query).split()
    haystack = fold(f"{entry.get('full_name', '')} {entry.get('organization', '')}").split()
    return bool(words) and all(any(word.startswith(w) for word in haystack) for w in words)


class Index:
    """The repository's index.json, re-read when its modification time or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def entries(self) -> list[dict[str, Any]]:
        """Published certificates, newest first."""
        with self._lock:
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                return []
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                body = json.loads(self.path.read_text(encoding="utf-8"))
                self._entries = list(reversed(body.get("certificates", [])))
                self._stamp = stamp
            return self._entries

    def search(self, query: str, limit: int) -> list[dict[str, Any]]:
        """Entries matching ``query`` (all when it is blank), at most ``limit``."""
        found = [e for e in self.entries() if not query.strip() or matches(e, query)]
        return found[:limit]


def _public(entry: dict[str, Any]) -> PublishedCertificate:
    def text(name: str) -> str:
        return str(entry.get(name, ""))

    def when(name: str) -> str | None:
        return None if entry.get(name) is None else str(entry[name])

    return PublishedCertificate(serial=text("serial"), full_name=text("full_name"), organization=text("organization"),
                                agency_code=text("agency_code"), not_before=when("not_before"),
                                not_after=when("not_after"), published_at=when("published_at"), der=text("der"),
                                pem=text("pem"))


def _date(value: Any) -> str:
    text = str(value or "")
    return f"{text[8:10]}/{text[5:7]}/{text[:4]}" if len(text) >= 10 else ""


def render_page(query: str, results: list[dict[str, Any]], total: int) -> str:
    """The Vietnamese listing and search page."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(str(r.get('full_name', '')))}</td><td>{e(str(r.get('organization', '')))}</td>"
        f"<td>{e(str(r.get('agency_code', '')))}</td><td><code>{e(str(r.get('serial', '')))}</code></td>"
        f"<td>{_date(r.get('not_before'))}</td><td>{_date(r.get('not_after'))}</td>"
        f"<td><a href=\"{e(str(r.get('der', '')))}\">DER</a> · <a href=\"{e(str(r.get('pem', '')))}\">PEM</a></td></tr>"
        for r in results)
    if query.strip():
        summary = f"Tìm thấy {len(results)} chứng thư số khớp với «{e(query)}»." if results else \
            f"Không tìm thấy chứng thư số nào khớp với «{e(query)}»."
    else:
        summary = f"Đang công bố {total} chứng thư số; hiển thị {len(results)} chứng thư mới nhất."
    table = (f"<table><thead><tr><th>Họ và tên</th><th>Cơ quan</th><th>Mã cơ quan quản lý</th><th>Số hiệu</th>"
             f"<th>Hiệu lực từ</th><th>Hiệu lực đến</th><th>Tải về</th></tr></thead><tbody>{rows}</tbody></table>"
             if results else "")
    return f"""<!DOCTYPE html>
<html lang="vi"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Kho công bố chứng thư số</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;width:100%}}
th,td{{border:1px solid #ccc;padding:.4em;text-align:left}}th{{background:#eef}}
input[type=search]{{width:28em;padding:.3em}}</style></head><body>
<h1>Kho công bố chứng thư số</h1>
<p>Tra cứu chứng thư số cá nhân đã công bố theo họ và tên (có hoặc không dấu), mã cơ quan quản lý,
số hiệu hoặc mã băm SHA-256 của số CCCD.</p>
<form method="get" action="./"><label for="q">Từ khóa:</label>
<input type="search" id="q" name="q" value="{e(query)}" placeholder="Ví dụ: Nguyễn Văn An">
<button type="submit">Tìm kiếm</button></form>
<p id="summary">{summary}</p>
{table}
<h2>Chứng thư số của CA và danh sách thu hồi</h2>
<ul><li><a href="ca/root.cer">CA gốc (DER)</a> · <a href="ca/root.pem">PEM</a></li>
<li><a href="ca/issuing.cer">CA cấp phát (DER)</a> · <a href="ca/issuing.pem">PEM</a></li>
<li><a href="crl/issuing.crl">Danh sách chứng thư số bị thu hồi (CRL)</a></li></ul>
</body></html>
"""


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorMessage, "description": "No such file in the repository"}}


def _binary(*media: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {m: {"schema": {"type": "string", "format": "binary"}} for m in media},
                  "description": "The file"}, **_NOT_FOUND}


def router(root: Path) -> APIRouter:
    """The repository's routes, serving ``root`` (the repository folder)."""
    index = Index(root / "index.json")
    routes = APIRouter(prefix="/repository", tags=["public repository"])

    def _file(folder: str, name: str) -> Response:
        # Read whole, once: the CRL and index are replaced by rename while served, and a
        # FileResponse would announce the old file's length and send the new one's bytes.
        path = root / folder / name
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise HTTPException(404, f"{folder}/{name} is not in the repository") from None
        return Response(data, media_type=MEDIA_TYPES[path.suffix])

    @routes.get("/certs/{name}", response_class=Response, responses=_binary(MEDIA_TYPES[".cer"],
                                                                                 MEDIA_TYPES[".pem"]))
    def certificate(name: str = PathParam(pattern=r"^[0-9a-f]{32}\.(cer|pem)$",
                                          description="<serial-hex>.cer (DER) or .pem")) -> Response:
        """A published certificate by its serial (32 hex digits)."""
        return _file("certs", name)

    @routes.get("/ca/{name}", response_class=Response, responses=_binary(MEDIA_TYPES[".cer"],
                                                                              MEDIA_TYPES[".pem"]))
    def ca_certificate(name: str = PathParam(
            pattern=r"^((root|issuing)\.(cer|pem)|chain\.pem)$",
            description="root.cer, root.pem, issuing.cer, issuing.pem or chain.pem")) -> Response:
        """A CA certificate (root, issuing) or the chain."""
        return _file("ca", name)

    @routes.get("/crl/{name}", response_class=Response, responses=_binary(MEDIA_TYPES[".crl"],
                                                                               MEDIA_TYPES[".pem"]))
    def crl(name: str = PathParam(pattern=r"^issuing\.(crl|pem)$",
                                                   description="issuing.crl (DER) or issuing.pem")) -> Response:
        """The issuing CA's current CRL (the certificates' CRL distribution point)."""
        return _file("crl", name)

    @routes.get("/search", response_model=SearchResults)
    def search(q: str = Query("", max_length=200, description="Name (diacritics optional), agency code, "
                                                                "serial or SHA-256 of the CCCD"),
               limit: int = Query(50, ge=1, le=PAGE_LIMIT)) -> SearchResults:
        """Search the published certificates."""
        found = index.search(q, limit)
        return SearchResults(query=q, count=len(found), results=[_public(entry) for entry in found])

    @routes.get("/", response_class=HTMLResponse, responses={200: {"content": {"text/html": {}}}})
    def page(q: str = Query("", max_length=200, description="Search words")) -> HTMLResponse:
        """The Vietnamese page listing and searching published certificates."""
        return HTMLResponse(render_page(q, index.search(q, PAGE_LIMIT), len(index.entries())))

    @routes.get("", include_in_schema=False)
    def page_without_slash() -> RedirectResponse:
        return RedirectResponse("/repository/", status_code=308)

    return routes
