"""Real servers the test suites start on loopback: Key Vault, Cosmos DB, PostgreSQL, KMS, SoftHSM."""
