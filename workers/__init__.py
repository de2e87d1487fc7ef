"""Thin dramatiq actors, one per stage: load state, call ``factory``, send the next id."""
