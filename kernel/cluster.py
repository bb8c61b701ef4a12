"""A PostgreSQL cluster administered as its superuser (`admin_url`): login roles and their passwords, databases and
their owners, and handing a schema's objects to the role that should own them. Used for the private cluster that
`lamplighter services` runs; a city's own database is administered by its DBAs.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

__all__ = [
    "adopt_schema",
    "create_database",
    "database_owner",
    "ensure_login_role",
    "reload_config",
    "set_database_owner",
    "set_password",
]

logger = logging.getLogger(__name__)


def set_password(admin_url: str, role: str, password: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))


def reload_config(admin_url: str) -> None:
    """Have the server read its configuration files again (pg_hba.conf among them)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")


def ensure_login_role(admin_url: str, role: str, password: str) -> None:
    """`role` exists, may log in with `password`, and may do nothing else of the cluster's (no superuser, no
    databases or roles of its own, no replication, no bypassing row security)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(
                verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD {}"
            ).format(sql.Identifier(role), sql.Literal(password))
        )


def database_owner(admin_url: str, name: str) -> str | None:
    """The role owning database `name` (None: no such database)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return str(row[0]) if row else None


def create_database(admin_url: str, name: str, owner: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))


def set_database_owner(admin_url: str, name: str, owner: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(owner)))


def adopt_schema(admin_url: str, owner: str) -> int:
    """Hand every table, view, sequence and function of the `public` schema to `owner` (a database made before
    the roles were split had them owned by the superuser). Returns how many changed hands."""
    kinds = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}
    with psycopg.connect(admin_url, autocommit=True) as conn, conn.transaction():
        rels = conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') "
            "AND pg_get_userbyid(c.relowner) <> %s "
            # a serial column's sequence follows its table
            "AND (c.relkind <> 'S' OR NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
            "                                    AND d.objid = c.oid AND d.deptype IN ('a', 'i')))",
            (owner,),
        ).fetchall()
        funcs = conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> %s",
            (owner,),
        ).fetchall()
        for name, kind in rels:
            conn.execute(
                sql.SQL("ALTER {} {} OWNER TO {}").format(
                    sql.SQL(kinds[kind]), sql.Identifier(name), sql.Identifier(owner)
                )
            )
        for (signature,) in funcs:
            conn.execute(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(sql.SQL(signature), sql.Identifier(owner)))
    if rels or funcs:
        logger.warning("database schema: %d objects handed to the owner role %s", len(rels) + len(funcs), owner)
    return len(rels) + len(funcs)
