"""HTTPS for `certfactory serve`, with client certificates handed to the app.

uvicorn verifies a client certificate against the configured CAs but does not pass it
on; this h11 protocol puts it in the request scope the way the ASGI TLS extension says
(``scope["extensions"]["tls"]["client_cert_chain"]``, PEM), so the API can tell which
agency presented it.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from certfactory.settings import Settings


class ClientCertificateH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, adding the peer's certificate to every request of the connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Wrap the app once per connection with the certificate the TLS handshake verified."""
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der is None:
            return
        chain = [ssl.DER_cert_to_PEM_cert(der)]
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = {"client_cert_chain": chain}
            await inner(scope, receive, send)

        self.app = app


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run's TLS options for these settings (none: plain HTTP). Checks the files now."""
    cert, key, client_ca = settings.http_tls_cert, settings.http_tls_key, settings.http_tls_client_ca
    if cert is None and key is None and client_ca is None:
        return {}
    if cert is None or key is None:
        raise ValueError("CERTFACTORY_HTTP_TLS_CERT and CERTFACTORY_HTTP_TLS_KEY go together")
    for name, path in (("CERTFACTORY_HTTP_TLS_CERT", cert), ("CERTFACTORY_HTTP_TLS_KEY", key),
                       ("CERTFACTORY_HTTP_TLS_CLIENT_CA", client_ca)):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{name}: {path} is not a file")
    options: dict[str, Any] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    if client_ca is not None:  # optional: callers without a certificate still use API keys
        options.update(ssl_ca_certs=str(client_ca), ssl_cert_reqs=ssl.CERT_OPTIONAL,
                       http=ClientCertificateH11Protocol)
    return options
