"""The SQLite store: schema, migrations and queries. Knows nothing of the UI or `workbench`."""

from db.connection import open_db

__all__ = ["open_db"]
