"""The domain core of certfactory: ledger, intake, validation, tokens, CA, publication.

Nothing here imports dramatiq, Prometheus, HTTP or the ``workers``/``monitoring``/
``certfactory`` packages; those call into this package, never the other way round.
"""
