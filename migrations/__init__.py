"""Alembic migrations of the registry schema, run by ``idis migrate`` (:mod:`registry.migrate`)."""
