"""NoteLett's notes repositories: the protocol (:mod:`notelett.repositories.base`) and one
module per backend (SQLite, PostgreSQL, Cosmos DB)."""
