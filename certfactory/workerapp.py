"""The module ``dramatiq`` workers load: broker, actors, metrics and this pool's Issuance.

The launcher sets CERTFACTORY_POOL (station | ca | general), SOFTHSM2_CONF and the
Prometheus multiprocess directory per pool. Nothing connects at import: the broker's
client and the tokens open on first use.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.middleware.prometheus import Prometheus

from certfactory import wiring
from certfactory.messaging import actors_for
from certfactory.settings import Settings
from monitoring.metrics import worker_metrics
from workers import middleware as stage_middleware

settings = Settings()
actors = actors_for(wiring.redis_url(settings), settings.worker_poll_floor_ms)
broker = dramatiq.get_broker()
broker.add_middleware(Prometheus())  # bound to dramatiq_prom_host, set by the launcher (never 0.0.0.0)
stage_middleware.install(broker, worker_metrics)
actors.install(lambda: wiring.issuance(settings, os.environ.get("CERTFACTORY_POOL", "all"),
                                       observe=worker_metrics().token_operation))
