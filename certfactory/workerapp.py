"""The module ``dramatiq`` workers load: broker, actors and this pool's Issuance.

The launcher sets CERTFACTORY_POOL (station | ca | general) and SOFTHSM2_CONF per pool.
Nothing connects at import: the broker's client and the tokens open on first use.
"""

from __future__ import annotations

import os

from certfactory import wiring
from certfactory.messaging import actors_for
from certfactory.settings import Settings

settings = Settings()
actors = actors_for(wiring.redis_url(settings))
actors.install(lambda: wiring.issuance(settings, os.environ.get("CERTFACTORY_POOL", "all")))
