"""CURVE keys and the ZAP handler: every bus socket is authenticated.

Each identity of ``bus.roles.IDENTITIES`` (every actor, the supervisor, the operator's
CLI) has its own CURVE keypair, created by the supervisor at first start with
``zmq.auth.create_certificates`` into ``<data_dir>/keys/`` (0700; secret files 0600).
The public keys of everyone a host trusts are in one roster, ``keys/roster.json``
(identity -> Z85 public key; ``keys export|import`` moves it between hosts).

Servers (the proxy's XSUB/XPUB, every ``RequestServer``) are CURVE servers with their
own identity's key and a ZAP domain: pyzmq's ``ThreadAuthenticator`` answers ZAP with a
roster lookup (``configure_curve_callback``) and names the client by its identity
(``curve_user_id``), which libzmq then attaches to every message from that connection
as ``User-Id``. ``ZAP_ENFORCE_DOMAIN`` makes libzmq refuse every client when no handler
answers, so a missing authenticator fails closed. Clients know the server's public key
from the roster, so they cannot be talked to by an impostor server either.

A connection from an unknown key is refused (``auth_refused_unknown_key``); one that
fails the handshake before ZAP (no CURVE at all, the wrong server key, garbage) is
counted by a socket monitor (``auth_handshake_failed``). Both are in the bind side's
heartbeat counters. There is no plaintext mode: a socket is configured by ``client`` or
``server`` or it cannot talk to anyone.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from loguru import logger
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from bus.roles import IDENTITIES
from shared.files import ensure_private_dir, write_private_file

KEYS_DIRNAME = "keys"
ROSTER_FILE = "roster.json"
ZAP_DOMAIN = "btcbot"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_@")
_HANDSHAKE_FAILURES = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                       | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                       | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class KeysError(Exception):
    """Keys missing, unreadable or inconsistent (the message says which and where)."""


def keys_dir_of(data_path: str | os.PathLike[str]) -> Path:
    return Path(data_path) / KEYS_DIRNAME


def _check_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
        raise KeysError(f"{name!r}: an identity is 1-64 of [a-z0-9-_@]")
    return name


def _check_key(name: str, key: str) -> bytes:
    raw = key.encode() if isinstance(key, str) else key
    if len(raw) != 40:
        raise KeysError(f"{name}: a public key is 40 Z85 characters, got {len(raw)}")
    try:
        z85.decode(raw)
    except (ValueError, KeyError) as exc:
        raise KeysError(f"{name}: not a Z85 key ({exc})") from None
    return raw


@dataclass(frozen=True)
class Roster:
    """identity -> Z85 public key: whom this host's servers accept."""

    keys: Mapping[str, bytes]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {k: n for n, k in self.keys.items()})

    def identity_of(self, public_z85: bytes) -> str | None:
        by_key: dict[bytes, str] = self._by_key  # type: ignore[attr-defined]
        return by_key.get(public_z85)

    def public(self, name: str) -> bytes:
        try:
            return self.keys[name]
        except KeyError:
            raise KeysError(f"no public key for {name!r} in the roster "
                            f"(known: {', '.join(sorted(self.keys)) or 'none'})") from None

    def to_json(self) -> bytes:
        doc = {"version": 1, "keys": {n: k.decode() for n, k in sorted(self.keys.items())}}
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes | str, *, where: str = "roster") -> Roster:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise KeysError(f"{where}: not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("version") != 1 \
                or not isinstance(doc.get("keys"), dict):
            raise KeysError(f"{where}: expected {{\"version\": 1, \"keys\": {{identity: key}}}}")
        keys = {_check_name(str(n)): _check_key(str(n), k) for n, k in doc["keys"].items()}
        return cls(keys)

    def merged(self, other: Roster) -> Roster:
        return Roster({**self.keys, **other.keys})


def load_roster(keys_dir: str | os.PathLike[str]) -> Roster:
    path = Path(keys_dir) / ROSTER_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeysError(f"{path}: no roster (the supervisor creates the keys at its first "
                        f"start; `btcbot-supervisor keys init` creates them now)") from None
    return Roster.from_json(raw, where=str(path))


def save_roster(keys_dir: str | os.PathLike[str], roster: Roster) -> None:
    write_private_file(Path(keys_dir) / ROSTER_FILE, roster.to_json())


def ensure_keys(keys_dir: str | os.PathLike[str],
                identities: Iterable[str] = IDENTITIES) -> Roster:
    """Create a keypair for every identity that has none (first start), and make sure
    the roster lists each one's public key. Existing keys are kept, and so are roster
    entries imported from other hosts: an identity the roster knows but whose secret is
    not here runs on another host and gets no new key (its process here, if any, exits
    2 naming the missing file)."""
    d = ensure_private_dir(keys_dir)
    try:
        roster = load_roster(d)
    except KeysError:
        if (d / ROSTER_FILE).exists():
            raise  # a corrupt roster is the operator's to look at, never overwritten
        roster = Roster({})
    keys = dict(roster.keys)
    for name in identities:
        _check_name(name)
        secret_file = d / f"{name}.key_secret"
        if not secret_file.exists() and name in keys:
            continue  # imported: its secret lives on the host that runs it
        if not secret_file.exists():
            zmq.auth.create_certificates(str(d), name)
            os.chmod(secret_file, 0o600)
            os.chmod(d / f"{name}.key", 0o600)
        public, _ = _read_secret(secret_file)
        keys[name] = public
    new = Roster(keys)
    if new.keys != roster.keys:
        save_roster(d, new)
    return new


def _read_secret(path: Path) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeysError(f"{path}: cannot read the key ({exc})") from None
    if not secret:
        raise KeysError(f"{path}: holds no secret key")
    return public, secret


class _RosterCallback:
    """``configure_curve_callback``'s provider: a client is its roster entry or nobody."""

    def __init__(self, auth: BusAuth) -> None:
        self.auth = auth

    def callback(self, domain: str, key: bytes) -> bool:
        name = self.auth.roster.identity_of(key)
        if name is None:
            self.auth.refused(key)
            return False
        return True


class _RosterAuthenticator(ThreadAuthenticator):
    def __init__(self, context: zmq.Context, auth: BusAuth) -> None:
        super().__init__(context)
        self._auth = auth

    def curve_user_id(self, client_public_key: bytes) -> str:
        # The name arrives on every message from this connection as frame["User-Id"].
        return self._auth.roster.identity_of(z85.encode(client_public_key)) or ""


class BusAuth:
    """One process's identity on the bus: configures its sockets as CURVE clients or
    servers, runs the ZAP handler for the contexts it serves on, and counts refusals."""

    def __init__(self, identity: str, public: bytes, secret: bytes, roster: Roster) -> None:
        self.identity = _check_name(identity)
        self.public = public
        self.secret = secret
        self.roster = roster
        self.counters: Counter[str] = Counter()
        self._authenticators: dict[int, _RosterAuthenticator] = {}
        self._monitors: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._logged_keys: set[bytes] = set()

    @classmethod
    def load(cls, keys_dir: str | os.PathLike[str], identity: str) -> BusAuth:
        """This identity's secret key and the roster; KeysError says what is missing."""
        d = Path(keys_dir)
        public, secret = _read_secret_or_explain(d, identity)
        roster = load_roster(d)
        if roster.keys.get(identity) != public:
            raise KeysError(f"{d}: the roster's public key for {identity!r} is not the one "
                            f"of {identity}.key_secret (re-run `keys init` or re-import)")
        return cls(identity, public, secret, roster)

    # --- sockets -----------------------------------------------------------------------
    def client(self, sock: zmq.Socket[Any], server: str) -> None:
        """Before connect: talk to ``server`` (its roster key) as this identity."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.roster.public(server)

    def server(self, sock: zmq.Socket[Any]) -> None:
        """Before bind: accept roster members only, named by ZAP; monitor refusals."""
        self._ensure_authenticator(sock.context)
        sock.zap_domain = ZAP_DOMAIN.encode()
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True
        self._monitor(sock)

    # --- ZAP and counting --------------------------------------------------------------
    def _ensure_authenticator(self, context: zmq.Context[Any]) -> None:
        with self._lock:
            key = context.underlying
            if key in self._authenticators:
                return
            # A plain shadow: the authenticator's sockets are used from its own thread,
            # and a shadow's are not closed by the owner's destroy() from ours.
            auth = _RosterAuthenticator(zmq.Context.shadow(key), self)
            auth.start()
            auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=_RosterCallback(self))
            self._authenticators[key] = auth

    def _monitor(self, sock: zmq.Socket[Any]) -> None:
        endpoint = f"inproc://btcbot-auth-monitor-{id(sock)}"
        sock.monitor(endpoint, _HANDSHAKE_FAILURES | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        ctx = zmq.Context.shadow(sock.context.underlying)
        pipe = ctx.socket(zmq.PAIR)
        pipe.connect(endpoint)
        thread = threading.Thread(target=self._watch, args=(pipe,), daemon=True,
                                  name="auth-monitor")
        thread.start()
        self._monitors.append(thread)

    def _watch(self, pipe: zmq.Socket[Any]) -> None:
        try:
            while True:
                event = recv_monitor_message(pipe)["event"]
                if event == zmq.EVENT_MONITOR_STOPPED:
                    return
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self.counters["auth_accepted"] += 1
                elif event & _HANDSHAKE_FAILURES:
                    self.counters["auth_handshake_failed"] += 1
                    if self.counters["auth_handshake_failed"] == 1:
                        logger.warning("bus auth: a connection failed the CURVE handshake "
                                       "(no CURVE, a wrong server key or garbage)")
        except zmq.ContextTerminated:
            pass
        finally:
            pipe.close(linger=0)

    def refused(self, key: bytes) -> None:
        """ZAP refused ``key`` (not in the roster): counted, logged once per key."""
        self.counters["auth_refused_unknown_key"] += 1
        if key not in self._logged_keys and len(self._logged_keys) < 100:
            self._logged_keys.add(key)
            logger.warning("bus auth: refused a connection from unknown key {}",
                           key.decode(errors="replace"))

    def heartbeat_counters(self) -> dict[str, int]:
        return dict(self.counters)

    def close(self) -> None:
        """Stop the ZAP handlers; before the context is terminated (they hold sockets)."""
        with self._lock:
            for auth in self._authenticators.values():
                auth.stop()
            self._authenticators.clear()


def _read_secret_or_explain(d: Path, identity: str) -> tuple[bytes, bytes]:
    path = d / f"{_check_name(identity)}.key_secret"
    if not path.exists():
        raise KeysError(f"{path}: no key for {identity!r} (the supervisor creates the keys "
                        f"at its first start; `btcbot-supervisor keys init` creates them now)")
    return _read_secret(path)


def load_for(data_path: str | os.PathLike[str], identity: str) -> BusAuth:
    """The usual way in: ``identity``'s keys under a config's data dir."""
    return BusAuth.load(keys_dir_of(data_path), identity)


class Keyset:
    """Throw-away keys held in memory (tests, benches): ``auth(name)`` for any of them."""

    def __init__(self, identities: Iterable[str]) -> None:
        self.pairs = {_check_name(n): zmq.curve_keypair() for n in identities}
        self.roster = Roster({n: pub for n, (pub, _) in self.pairs.items()})

    def auth(self, identity: str) -> BusAuth:
        public, secret = self.pairs[identity]
        return BusAuth(identity, public, secret, self.roster)
