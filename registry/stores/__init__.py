"""Adapters of :class:`resolver.ports.RecordStore` onto real databases."""

from registry.stores.sql import SqlStore

__all__ = ["SqlStore"]
