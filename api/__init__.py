"""The HTTP API: one router per resource under /api/v1, consistent errors, OpenAPI at /docs."""

from api.app import create_app

__all__ = ["create_app"]
