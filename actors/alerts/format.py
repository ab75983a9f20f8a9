"""The body a webhook receives (pure): our JSON event, or a Telegram Bot API
``sendMessage`` body so that a bot token URL makes a phone buzz."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from actors.alerts.events import AlertEvent
from shared.config import WebhookConfig

_MARK = {"critical": "[CRITICAL]", "warning": "[WARNING]", "info": "[info]"}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def as_json(event: AlertEvent, mode: str) -> dict[str, Any]:
    return {"source": "btcbot", "mode": mode, "event": event.kind,
            "severity": event.severity, "summary": event.summary, "at": _iso(event.at),
            "detail": dict(event.detail)}


def as_telegram(event: AlertEvent, mode: str, chat_id: str) -> dict[str, Any]:
    text = (f"{_MARK[event.severity]} btcbot ({mode}) {event.kind}\n{event.summary}\n"
            f"{_iso(event.at)}")
    return {"chat_id": chat_id, "text": text[:4096],  # Telegram's message length limit
            "disable_notification": event.severity == "info"}


def body_for(hook: WebhookConfig, event: AlertEvent, mode: str) -> bytes:
    doc = (as_telegram(event, mode, hook.chat_id) if hook.format == "telegram"
           else as_json(event, mode))
    return msgspec.json.encode(doc)
