"""The HTTP API: one router per resource under /api/v1, consistent errors, OpenAPI at /docs."""
