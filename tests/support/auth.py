"""Signing the tests' HTTP clients in, as a user of a given role created the way `lamplighter users add` does."""

from __future__ import annotations

import uuid

import psycopg
from fastapi.testclient import TestClient

from api.auth import add_user


def make_user(database_url: str, role: str, *, crew: str | None = None, password: str | None = None) -> tuple[str, str]:
    """A new user of `role`; returns its name and API token."""
    name = f"{role}-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        user, token = add_user(conn, name, role, crew=crew, password=password)
    return user.name, token


def sign_in(client: TestClient, database_url: str, role: str, *, crew: str | None = None) -> str:
    """Make every later request of `client` carry a new `role` user's token; returns the user's name."""
    name, token = make_user(database_url, role, crew=crew)
    client.headers["Authorization"] = f"Bearer {token}"
    return name
