"""Fault tickets: the queue with filters, one ticket with its history and deliveries, people's actions, and a
live stream of ticket events (server-sent events) for the crew page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
import psycopg
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from alerts.queries import list_tickets_page
from alerts.tickets import WAITING, act, get_ticket, ticket_json
from api.auth import User
from api.deps import (
    ClockDep,
    ConnDep,
    Offset,
    OperatorOrCrew,
    PoolDep,
    SyncPoolDep,
    ViewerOrCrew,
    authenticate,
    decode_body,
    filter_param,
    in_thread,
    json_body,
    limit_param,
    request_token,
)
from api.errors import ApiError
from api.live import TicketFeed

router = APIRouter(prefix="/api/v1/tickets", tags=["tickets"])

_CREW_ACTIONS = ("acknowledge", "comment", "resolve")
_EVENT_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit also takes "²", which int() refuses


def _scope(user: User, crew: str | None) -> str | None:
    """The crew filter a request may use: a crew user sees its own crew's tickets only."""
    if user.role != "crew":
        return crew
    if crew is not None and crew != user.crew:
        raise ApiError(403, "forbidden", f"{user.name} belongs to crew {user.crew}, not {crew}", "crew")
    return user.crew


def _own(user: User, ticket: dict[str, Any], ticket_id: int) -> None:
    if user.role == "crew" and ticket.get("crew") != user.crew:
        raise ApiError(404, "not_found", f"ticket {ticket_id} is not assigned to crew {user.crew}", "ticket_id")


Status = Literal[
    "open", "dispatched", "acknowledged", "resolved", "verified", "cancelled", "transient", "reopened", "live"
]


@router.get("")
async def list_tickets(
    user: ViewerOrCrew,
    conn: ConnDep,
    clock: ClockDep,
    status: Annotated[
        list[Status] | None,
        filter_param("may repeat; `live`: open, dispatched, acknowledged and reopened", ["live"], ["open", "reopened"]),
    ] = None,
    priority: Annotated[
        list[Literal["P1", "P2", "P3", "P4"]] | None, filter_param("may repeat", ["P1"], ["P1", "P2"])
    ] = None,
    district: Annotated[str | None, filter_param("district code", "cd")] = None,
    fault: Annotated[str | None, filter_param("fault code", "lamp_failure", "mains_loss")] = None,
    asset: Annotated[str | None, filter_param("a lamp or cabinet id", "XN-CD-000001", "XN-CD-C0001")] = None,
    asset_type: Annotated[Literal["lamp", "cabinet"] | None, filter_param("one kind of ticket", "lamp")] = None,
    crew: Annotated[str | None, filter_param("crew id (a crew's own login sees only its own)", "cd-crew")] = None,
    limit: Annotated[int, limit_param(1000)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer (crew: its own). Newest first. `status` and `priority` may repeat; `status=live` stands for
    open, dispatched, acknowledged and reopened (the tickets still waiting for someone). `asset` is a lamp or
    cabinet id; a lamp also matches the cabinet tickets that list it, unless `asset_type=lamp` asks for the lamp's
    own tickets only (`asset_type=cabinet`: the cabinet tickets that list it). `asset_type` alone keeps one kind."""
    crew = _scope(user, crew)
    total, rows = await list_tickets_page(
        conn,
        clock.now(),
        statuses=sorted({x for st in status for x in (WAITING if st == "live" else (st,))}) if status else None,
        priorities=list(priority) if priority else None,
        district=district,
        fault=fault,
        crew=crew,
        asset=asset,
        asset_type=asset_type,
        limit=limit,
        offset=offset,
    )
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


@router.get("/events")
async def ticket_events(
    user: ViewerOrCrew,
    request: Request,
    pool: PoolDep,
    crew: Annotated[str | None, filter_param("crew id (a crew's own login sees only its own)", "cd-crew")] = None,
    after: Annotated[int | None, filter_param("replay the events after this event id first", 0)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Role: viewer (crew: its own). Ticket events as server-sent events (`id`, `event: ticket`, JSON data),
    live; a client that reconnects with `Last-Event-ID` (or `after`) gets what it missed first."""
    crew = _scope(user, crew)
    start = after
    if start is None and last_event_id is not None:
        if not _EVENT_ID.fullmatch(last_event_id):
            raise ApiError(
                422,
                "invalid",
                f"Last-Event-ID must be an event id (digits), got {last_event_id[:40]!r}",
                "Last-Event-ID",
            )
        start = int(last_event_id)

    feed: TicketFeed = request.app.state.ticket_feed
    if feed.clients >= feed.max_clients:
        raise ApiError(503, "busy", f"{feed.clients} live streams are open, the most this API serves; try again later")
    slot = request.app.state.streams.take(user)
    token = request_token(request) or ""

    async def allowed() -> bool:
        return await authenticate(request, token) is not None

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for chunk in feed.stream(pool, start, crew, disconnected=request.is_disconnected, allowed=allowed):
                yield chunk
        finally:
            slot.release()

    body = stream()
    slot.bind(body)
    return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-store"})


@router.get("/{ticket_id}")
async def read_ticket(user: ViewerOrCrew, pool: SyncPoolDep, clock: ClockDep, ticket_id: int) -> dict[str, Any]:
    """Role: viewer (crew: its own). One ticket with its lamps, location, history and deliveries."""
    ticket = await in_thread(pool, lambda conn: get_ticket(conn, ticket_id, clock.now()))
    _own(user, ticket, ticket_id)
    return ticket


class ActionBody(msgspec.Struct, forbid_unknown_fields=True):
    # What a crew or an operator writes has limits (docs/api.md): a ticket's note goes out in its notifications
    # and lives in the live feed's memory, so one careless paste cannot cost everyone else.
    action: Annotated[str, msgspec.Meta(max_length=32)]
    note: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    parts: Annotated[list[Annotated[str, msgspec.Meta(max_length=100)]], msgspec.Meta(max_length=50)] = msgspec.field(
        default_factory=list
    )
    crew: Annotated[str, msgspec.Meta(max_length=32)] | None = None


@router.post("/{ticket_id}/actions", openapi_extra=json_body(ActionBody))
async def ticket_action(
    user: OperatorOrCrew, request: Request, pool: SyncPoolDep, clock: ClockDep, ticket_id: int
) -> dict[str, Any]:
    """Role: operator or the ticket's crew. `{"action": "acknowledge" | "resolve" | "cancel" | "comment" |
    "reassign", "note", "parts", "crew" (reassign)}`; 409 when the ticket's state does not allow it."""
    body = await decode_body(request, ActionBody)
    if user.role == "crew" and body.action not in _CREW_ACTIONS:
        raise ApiError(
            403, "forbidden", f"a crew may {', '.join(_CREW_ACTIONS)}; {body.action} needs an operator", "action"
        )

    def run(conn: psycopg.Connection) -> dict[str, Any]:
        now = clock.now()
        if user.role == "crew":
            _own(user, ticket_json(conn, ticket_id, now), ticket_id)
        act(conn, ticket_id, body.action, actor=user.name, now=now, note=body.note, parts=body.parts, crew=body.crew)
        return get_ticket(conn, ticket_id, now)

    return await in_thread(pool, run)
