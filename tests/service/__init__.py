"""NoteLett through its real HTTP app: TestClient, and a real uvicorn process on loopback."""
