"""``btcbot-supervisor roles`` and ``keys init|show|export|import``: the bus's roles
table (bus/roles.py) and its CURVE keys (bus/auth.py).

Only public keys ever leave a host: ``keys export`` prints the roster (or some of its
identities) as JSON, ``keys import FILE`` adds another host's public keys to this one's
roster, so its servers accept those identities and its clients can authenticate the
other host's servers. Secret keys stay in ``<data_dir>/keys/`` (0600), never printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from actors.supervisor.cli_common import EXIT_USAGE, fail, load
from bus import roles
from bus.auth import KeysError, Roster, ensure_keys, keys_dir_of, load_roster, save_roster


@click.command("roles")
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
def roles_cmd(as_json: bool) -> None:
    """Who may publish which topics and send which commands (bus/roles.py)."""
    if as_json:
        click.echo(json.dumps(roles.table(), indent=2))
    else:
        click.echo(roles.render())


@click.group()
def keys() -> None:
    """The bus's CURVE keys: one keypair per identity, public keys in one roster."""


@keys.command("init")
@click.pass_context
def keys_init(ctx: click.Context) -> None:
    """Create the missing keypairs now (the supervisor does it at its first start); on a
    host with a bus.host_id, they are named <identity>@<host_id>."""
    cfg = load(ctx)
    d = keys_dir_of(cfg.data_path)
    try:
        roster = ensure_keys(d, [cfg.identity(n) for n in roles.IDENTITIES])
    except KeysError as exc:
        fail(str(exc))
    click.echo(f"{d}: {len(roster.keys)} identities in the roster")


@keys.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_show(ctx: click.Context, as_json: bool) -> None:
    """The roster: identity and public key, and whether this host holds its secret."""
    cfg = load(ctx)
    d = keys_dir_of(cfg.data_path)
    try:
        roster = load_roster(d)
    except KeysError as exc:
        fail(str(exc))
    rows = [{"identity": n, "public_key": k.decode(),
             "secret_here": (d / f"{n}.key_secret").exists()}
            for n, k in sorted(roster.keys.items())]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['identity']:<12} {r['public_key']}  "
                   f"{'secret here' if r['secret_here'] else 'public only (imported)'}")


@keys.command("export")
@click.option("--only", default="", help="comma-separated identities (default: all)")
@click.pass_context
def keys_export(ctx: click.Context, only: str) -> None:
    """Print public keys as JSON, for `keys import` on another host."""
    cfg = load(ctx)
    try:
        roster = load_roster(keys_dir_of(cfg.data_path))
    except KeysError as exc:
        fail(str(exc))
    names = [n.strip() for n in only.split(",") if n.strip()] or sorted(roster.keys)
    unknown = [n for n in names if n not in roster.keys]
    if unknown:
        fail(f"--only: not in the roster: {', '.join(unknown)}", EXIT_USAGE)
    sys.stdout.write(Roster({n: roster.keys[n] for n in names}).to_json().decode())


@keys.command("import")
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--replace", is_flag=True,
              help="let an imported key replace a different one already in the roster")
@click.pass_context
def keys_import(ctx: click.Context, source: str, replace: bool) -> None:
    """Add another host's public keys (a `keys export` file, or - for stdin)."""
    cfg = load(ctx)
    d = keys_dir_of(cfg.data_path)
    raw = sys.stdin.read() if source == "-" else Path(source).read_text()
    try:
        incoming = Roster.from_json(raw, where=source)
        current = load_roster(d)  # never ensure_keys: it would mint what we import
    except KeysError as exc:
        fail(str(exc), EXIT_USAGE)
    changed = [n for n, k in incoming.keys.items()
               if n in current.keys and current.keys[n] != k]
    if changed and not replace:
        fail(f"would replace the key of {', '.join(changed)} (a different one is in the "
             f"roster; --replace if that host's key is the one to trust now)", EXIT_USAGE)
    # An identity whose secret is here is this host's own; another host's key for it
    # would lock this host's own process out.
    own = [n for n in changed if (d / f"{n}.key_secret").exists()]
    if own:
        fail(f"{', '.join(own)}: this host holds that identity's secret key; "
             f"run it here or remove {d}/<name>.key_secret first", EXIT_USAGE)
    save_roster(d, current.merged(incoming))
    click.echo(f"imported {len(incoming.keys)} public keys into {d / 'roster.json'}"
               + (f" (replaced: {', '.join(changed)})" if changed else ""))
