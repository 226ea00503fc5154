"""The PostgreSQL backend, on SQLAlchemy Core and psycopg (the ``postgres`` extra)."""
