"""The SQLite backend: the embedded default, on the standard library's ``sqlite3``."""
