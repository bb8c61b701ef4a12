"""The protocol's topics, built and parsed in one place.

A device's topics are `sl/{district}/{lamp|cabinet}/{id}/{channel}`: it publishes `state` (its reports), `status`
(retained online/offline, and its last will) and `ack` (its answers to commands), and reads `cmd`. Beside them, the
city's retained lighting rate (`sl/ops/lighting-rate`) and each crew's ticket notifications
(`sl/crews/{crew}/tickets`).
"""

from __future__ import annotations

import re
from typing import Final, Literal

__all__ = [
    "ACK_FILTERS",
    "CHANNELS",
    "CMD_FILTERS",
    "DEVICE_KINDS",
    "OPS_RATE_TOPIC",
    "REPORT_CHANNELS",
    "REPORT_FILTERS",
    "ROOT",
    "ack_topic",
    "cmd_topic",
    "crew_tickets_topic",
    "device_topic",
    "district_report_filters",
    "filter_pattern",
    "split_device_topic",
    "split_report_topic",
]

ROOT: Final = "sl"
DEVICE_KINDS: Final = ("lamp", "cabinet")
CHANNELS: Final = ("state", "status", "cmd", "ack")
REPORT_CHANNELS: Final = ("state", "status")  # what devices publish and the gateway ingests

Kind = Literal["lamp", "cabinet"]
Channel = Literal["state", "status", "cmd", "ack"]

OPS_RATE_TOPIC: Final = f"{ROOT}/ops/lighting-rate"  # the city's rate, retained, for wall displays
ACK_FILTERS: Final = tuple(f"{ROOT}/+/{kind}/+/ack" for kind in DEVICE_KINDS)
CMD_FILTERS: Final = tuple(f"{ROOT}/+/{kind}/+/cmd" for kind in DEVICE_KINDS)


def device_topic(district: str, kind: str, device: str, channel: str) -> str:
    """`sl/{district}/{kind}/{device}/{channel}`."""
    return f"{ROOT}/{district}/{kind}/{device}/{channel}"


def cmd_topic(district: str, lamp: str) -> str:
    """Where a lamp reads its commands."""
    return f"{ROOT}/{district}/lamp/{lamp}/cmd"


def ack_topic(district: str, lamp: str) -> str:
    """Where a lamp answers its commands (the only place its answer counts)."""
    return f"{ROOT}/{district}/lamp/{lamp}/ack"


def crew_tickets_topic(crew: str) -> str:
    """Where a crew's app hears of its tickets."""
    return f"{ROOT}/crews/{crew}/tickets"


def district_report_filters(district: str) -> list[str]:
    """The subscriptions that take in one district's reports and statuses (`+`: every district's)."""
    return [f"{ROOT}/{district}/{kind}/+/{channel}" for channel in REPORT_CHANNELS for kind in DEVICE_KINDS]


REPORT_FILTERS: Final = tuple(district_report_filters("+"))


def split_device_topic(topic: str) -> tuple[str, str, str, str] | None:
    """(district, kind, device, channel) of any device topic, or None when `topic` is none."""
    return _split(topic, CHANNELS)


def split_report_topic(topic: str) -> tuple[str, str, str, str] | None:
    """(district, kind, device, channel) of a report or status topic, or None for anything else (the gateway's
    `bad_topic`). Called once per message: no object made."""
    return _split(topic, REPORT_CHANNELS)


def _split(topic: str, channels: tuple[str, ...]) -> tuple[str, str, str, str] | None:
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != ROOT:
        return None
    _, district, kind, device, channel = parts
    if kind not in DEVICE_KINDS or channel not in channels or not district or not device:
        return None
    return district, kind, device, channel


def filter_pattern(topic: str) -> str:
    """An MQTT topic filter (`+` one level, `#` the rest) as an anchored regular expression; ValueError when a
    wildcard does not fill its level or `#` is not last."""
    levels = topic.split("/")
    if any(("+" in lv and lv != "+") or ("#" in lv and lv != "#") for lv in levels) or "#" in levels[:-1]:
        raise ValueError("'+' must fill a whole level and '#' be the last one")
    parts = ["[^/]*" if lv == "+" else ".*" if lv == "#" else re.escape(lv) for lv in levels]
    pattern = "/".join(parts)
    if levels[-1] == "#":  # `a/#` also matches `a` itself, as in MQTT
        pattern = "/".join(parts[:-1]) + "(/.*)?"
    return f"^{pattern}$"
