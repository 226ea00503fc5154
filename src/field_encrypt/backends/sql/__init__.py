"""The SQL the SQLite and PostgreSQL backends share: written once, run through a dialect.

Each store here is written against :class:`~field_encrypt.backends.sql.dialect.Dialect`
(named ``:name`` parameters, which both drivers take), and the backends' folders hold only
their schema (DDL) and a thin subclass naming the dialect. What differs between the two
databases is the dialect's, and small: how a transaction serialises lease decisions
(``BEGIN IMMEDIATE`` against an advisory lock), row locking (``FOR UPDATE``), the clock of
timestamps, and the insertion-order column (``rowid`` against ``seq``).
"""
