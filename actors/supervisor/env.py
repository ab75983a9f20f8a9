"""The environment each child starts with: exchange credentials only where needed.

Only a child whose spec says ``secrets`` (the executor) may see ``BTCTURK_API_*``, and
only in live mode: paper mode signs with the simulator's own keys, dry-run signs
nothing. Every other child gets the supervisor's environment with those removed, so a
compromised or chatty actor (a crash dump, a debug print of os.environ) cannot leak
them. Gates (``BTCBOT_*``) stay: risk and the executor read them.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.actorspec import ActorSpec

SECRET_VARS = ("BTCTURK_API_KEY", "BTCTURK_API_SECRET")
# Ours only: the supervisor's own stderr logging must not be inherited by children.
# NOTIFY_SOCKET: systemd's, for the supervisor alone (a child that could notify could
# feed the watchdog of a stuck supervisor).
SUPERVISOR_ONLY_VARS = ("BTCBOT_LOG_STDERR", "NOTIFY_SOCKET")


def child_environment(env: Mapping[str, str], spec: ActorSpec, mode: str) -> dict[str, str]:
    out = {k: v for k, v in env.items() if k not in SUPERVISOR_ONLY_VARS}
    if not (spec.secrets and mode == "live"):
        for name in SECRET_VARS:
            out.pop(name, None)
    return out


def ignored_live_credentials(env: Mapping[str, str], mode: str, config_key: str) -> bool:
    """Paper mode with live credentials around: they are ignored (and the operator is
    told), the simulator's keys are used."""
    return mode == "paper" and bool(config_key or any(env.get(n) for n in SECRET_VARS))
