"""The HTTP routes: thin functions from request to service call to response model."""
