"""The storage backends: one folder each (SQLite, PostgreSQL, Cosmos DB), the protocols they
implement (:mod:`field_encrypt.backends.base`) and the one place that picks a backend from
settings (:mod:`field_encrypt.backends.registry`)."""
