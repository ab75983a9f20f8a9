"""Who may do what on the bus: one table, data not code.

Every bus identity is a CURVE keypair (``bus/auth.py``); the ZAP handler maps the
client's public key to its identity, which libzmq attaches to every message it receives
from that connection (the ``User-Id`` frame property). Two checks read this table:

- the proxy (``bus/proxy.py``) checks every data frame's topic against the publishing
  identity's ``PUBLISH`` entries and drops (and counts) the rest;
- every ``RequestServer`` (``bus/transport.py``) checks the authenticated caller against
  ``COMMANDS[server][caller]`` before the handler runs, and refuses (and counts) the rest.

A topic entry ending in ``.`` is a prefix (``md.book.`` covers ``md.book.BTCTRY``); any
other entry is one exact topic (``hb.executor`` does not cover ``hb.executorX``).
Every actor may publish its own ``hb.<name>`` and ``state.<name>`` and nothing else's:
a heartbeat is accepted only from the actor it names.

``btcbot-supervisor roles`` prints this table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bus.messages import Msg, SetLatch, SupervisorCommand

# The identities of a deployment: every bus process, the supervisor and the operator's
# CLI (``btcbot-supervisor status|stop|orders…``). The supervisor generates a keypair for
# each at first start (``bus/auth.py``).
ACTORS: tuple[str, ...] = ("bus", "recorder", "executor", "marketdata", "risk", "strategy",
                           "reconciler", "alerts", "dashboard")
SUPERVISOR = "supervisor"
OPERATOR = "operator"
IDENTITIES: tuple[str, ...] = (*ACTORS, SUPERVISOR, OPERATOR)
# Replay's isolated pipelines add this one to their own throw-away key set; a live
# roster never holds it unless someone imports it.
REPLAY = "replay"

# identity -> the topics it may publish, besides its own hb.<name> and state.<name>.
PUBLISH: Mapping[str, tuple[str, ...]] = {
    "bus": (),
    "recorder": (),
    "executor": ("order.", "fill.", "portfolio", "incident."),
    "marketdata": ("md.book.", "md.trade.", "md.status", "md.rules.", "md.clock"),
    # verify.*: what strategy and risk decide in replay --verify's pipeline, compared
    # there and consumed by no actor (replay/verify.py). The strategy's own stand-in for
    # a decision risk never published (risk unreachable) goes on intent.outcome.<SYM>.
    "risk": ("decision.", "verify.decision."),
    "strategy": ("intent.", "verify.intent."),
    "reconciler": ("reconcile.report",),
    "alerts": (),
    "dashboard": (),
    SUPERVISOR: ("control",),
    OPERATOR: (),
    # The recorded data plane, never anyone's heartbeat, state or control.
    REPLAY: ("md.", "intent.", "decision.", "order.", "fill.", "portfolio",
             "reconcile.report", "incident.", "replay.probe", "replay.start",
             # recorded controls, for a verify pipeline's strategy and risk only (the
             # actors of a live roster never subscribe to it)
             "replay.control"),
}

# What the operator may ask the supervisor (the CLI and the dashboard, which sends its
# buttons' commands on the operator's behalf).
OPERATOR_SUPERVISOR_COMMANDS: tuple[str, ...] = (
    "status", "stop", "restart", "kill_switch", "pause", "resume", "latch_clear", "Ping")

# server -> caller -> the commands it may send there. A command's name is its message
# type, except SetLatch, which is ``SetLatch.set`` or ``SetLatch.clear`` (the reconciler
# may set the safety latch, never clear one), and SupervisorCommand, which is its
# ``command`` field (``status``, ``stop``…). Anyone not listed is refused.
COMMANDS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "executor": {
        # Only risk submits and cancels: every order has passed its gates.
        "risk": ("SubmitOrder", "CancelOrder", "SnapshotQuery", "Ping"),
        "strategy": ("SnapshotQuery", "Ping"),
        "reconciler": ("ReconcileQuery", "SnapshotQuery", "SetLatch.set", "Ping"),
        SUPERVISOR: ("SetLatch.set", "SetLatch.clear", "SnapshotQuery", "Ping"),
        OPERATOR: ("ResolveOrder", "SnapshotQuery", "Ping"),
    },
    "risk": {
        "strategy": ("SubmitIntent", "CancelOrder", "Ping"),
        SUPERVISOR: ("Ping",),
    },
    SUPERVISOR: {
        OPERATOR: OPERATOR_SUPERVISOR_COMMANDS,
        "dashboard": OPERATOR_SUPERVISOR_COMMANDS,
    },
    # Every other actor's command socket serves Ping only (liveness).
    **{name: {SUPERVISOR: ("Ping",), OPERATOR: ("Ping",)}
       for name in ("bus", "recorder", "marketdata", "strategy", "reconciler", "alerts",
                    "dashboard")},
}


def role_of(identity: str) -> str:
    """An identity's role: its name before any ``@host`` (a host running a subset of the
    actors names its keys ``strategy@b``: the strategy's role, its own key)."""
    return identity.partition("@")[0]


def command_name(body: Msg) -> str:
    """The name ``COMMANDS`` knows a command body by."""
    if isinstance(body, SetLatch):
        return "SetLatch.set" if body.value else "SetLatch.clear"
    if isinstance(body, SupervisorCommand):
        return body.command
    return type(body).__name__


def own_topics(identity: str) -> tuple[str, ...]:
    """The exact topics every identity publishes about itself."""
    return (f"hb.{identity}", f"state.{identity}")


def publish_rules(identity: str) -> tuple[str, ...]:
    """Everything ``identity`` may publish (an unknown identity: nothing)."""
    if identity not in PUBLISH:
        return ()
    return (*own_topics(identity), *PUBLISH[identity])


def topic_allowed(rules: Iterable[str], topic: str) -> bool:
    """``topic`` matches one entry: a prefix (ending in ``.``) or an exact topic."""
    for rule in rules:
        if rule.endswith("."):
            if topic.startswith(rule):
                return True
        elif topic == rule:
            return True
    return False


def may_publish(identity: str, topic: str) -> bool:
    return topic_allowed(publish_rules(role_of(identity)), topic)


def may_call(server: str, caller: str, command: str) -> bool:
    return command in COMMANDS.get(role_of(server), {}).get(role_of(caller), ())


def callers(server: str, command: str) -> list[str]:
    """Who may send ``command`` to ``server`` (tests and tools pick their key by it)."""
    return [c for c, allowed in COMMANDS.get(server, {}).items() if command in allowed]


class PublishGate:
    """The proxy's per-frame check: a dict lookup per (identity, topic) after the first.
    Bounded, so a flood of distinct topics cannot grow it without limit."""

    def __init__(self, max_entries: int = 8192) -> None:
        self.max_entries = max_entries
        self._cache: dict[tuple[str, bytes], bool] = {}

    def allowed(self, identity: str, topic: bytes) -> bool:
        key = (identity, topic)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        try:
            verdict = may_publish(identity, topic.decode())
        except UnicodeDecodeError:
            verdict = False
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[key] = verdict
        return verdict


def table() -> dict[str, object]:
    """The whole table as plain data (``roles --json``)."""
    return {
        "identities": list(IDENTITIES) + [REPLAY],
        "publish": {name: list(publish_rules(name)) for name in PUBLISH},
        "commands": {server: {caller: list(cmds) for caller, cmds in by_caller.items()}
                     for server, by_caller in COMMANDS.items()},
    }


def render() -> str:
    """The table for a terminal (``roles``)."""
    lines = ["Publish (topic prefixes end in '.'; others are exact topics):"]
    for name in PUBLISH:
        lines.append(f"  {name:<11} {', '.join(publish_rules(name))}")
    lines.append("")
    lines.append("Commands (server <- caller: commands):")
    for server, by_caller in COMMANDS.items():
        for caller, cmds in by_caller.items():
            lines.append(f"  {server:<11} <- {caller:<11} {', '.join(cmds)}")
    return "\n".join(lines)
