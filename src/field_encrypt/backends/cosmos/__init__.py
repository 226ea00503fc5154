"""The Azure Cosmos DB backend, on ``azure-cosmos`` (the ``cosmos`` extra)."""
