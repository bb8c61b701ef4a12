"""Faults, tickets and dispatch: rules over the fleet, debounce and correlation, the ticket lifecycle with its
transactional outbox, and the dispatcher that delivers it to the crews' channels."""

from alerts.dispatch import Dispatcher, MqttTransport, NotifyTransport, WebhookTransport
from alerts.engine import AlertEngine
from alerts.service import AlertService
from alerts.tickets import Deadlines, TicketError

__all__ = [
    "AlertEngine",
    "AlertService",
    "Deadlines",
    "Dispatcher",
    "MqttTransport",
    "NotifyTransport",
    "TicketError",
    "WebhookTransport",
]
