"""`keygen`, `fingerprint`, `trust`: a peer's ed25519 identity and the operator's pinned keys.

Every CMB a peer emits is signed with its key; peers in `strict` admission accept only authors whose
key an operator pinned with `trust add` after comparing keyprints out of band.
"""

from __future__ import annotations

import typer

from xmesh_agent.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, fail, print_json

trust_app = typer.Typer(
    help='Pin, list and unpin peers\' public keys per mesh group (used by `admission = "strict"`); see and '
    "forget what a peer took on trust at first sight (`seen`, `forget`).\n\n"
    "Example: on the other machine run `xmesh-agent fingerprint writer-01`, compare the keyprint by "
    "phone or chat, then `xmesh-agent trust add --group team --peer writer-01 --public-key <b64url>`.",
    no_args_is_help=True,
)


def _facts(identity) -> dict[str, str | None]:  # noqa: ANN001 - xmesh_agent.identity.NodeIdentity
    from xmesh_agent.identity import fingerprint as full_fingerprint
    from xmesh_agent.identity import key_paths

    return {
        "peer": identity.name,
        "algorithm": "ed25519",
        "node_id": identity.node_id,
        "keyprint": identity.keyprint,
        "fingerprint": full_fingerprint(identity.public_key),
        "public_key": identity.public_key_b64url,
        "created_at": identity.created_at or None,
        "key_file": str(key_paths(identity.name)[0]),
    }


def _show(identity, header: str) -> None:  # noqa: ANN001 - xmesh_agent.identity.NodeIdentity
    from xmesh_agent.identity import fingerprint as full_fingerprint
    from xmesh_agent.identity import key_paths

    typer.echo(header)
    typer.echo(f"  peer:        {identity.name}")
    typer.echo("  algorithm:   ed25519")
    typer.echo(f"  node id:     {identity.node_id}")
    typer.echo(f"  keyprint:    {identity.keyprint}")
    typer.echo(f"  fingerprint: {full_fingerprint(identity.public_key)}")
    typer.echo(f"  public key:  {identity.public_key_b64url}")
    if identity.created_at:
        typer.echo(f"  created:     {identity.created_at}")
    typer.echo(f"  key file:    {key_paths(identity.name)[0]}")


def _check_peer(peer: str) -> None:
    import re

    from xmesh_agent.config import NAME_PATTERN

    if not re.fullmatch(NAME_PATTERN, peer):
        fail(f"invalid peer name {peer!r}: letters, digits, '.', '_' and '-', at most 64", EXIT_USAGE)


def keygen(
    peer: str = typer.Argument(..., help="The peer's name (identity.name in its agent.toml)."),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing key (peers that pinned it must re-pin)."
    ),
) -> None:
    """Create the peer's ed25519 signing key under ~/.xmesh/keys (private key mode 0600).

    `xmesh-agent run` creates one on first start; keygen makes it now, to share it for `trust add`.

    Example: `xmesh-agent keygen reviewer-01`.
    """
    from xmesh_agent.identity import KeyExistsError, NodeIdentity, load_identity, save_identity

    _check_peer(peer)
    identity = NodeIdentity.generate(peer)
    try:
        path = save_identity(identity, force=force)
    except KeyExistsError:
        existing = load_identity(peer)
        shown = existing.keyprint if existing else "unreadable"
        typer.echo(f"a key for {peer} already exists (keyprint {shown}); --force replaces it")
        raise typer.Exit(EXIT_FAIL) from None
    _show(identity, f"created {path}")
    typer.echo(
        "share the public key; others pin it with `xmesh-agent trust add --group … --peer … --public-key …`"
    )


def fingerprint(
    peer: str = typer.Argument(..., help="The peer whose key to show."),
    as_json: bool = typer.Option(
        False, "--json", help="{peer, algorithm, node_id, keyprint, fingerprint, public_key, …}."
    ),
) -> None:
    """Show a peer's keyprint (16 hex), full fingerprint (64 hex SHA-256) and public key.

    Compare the keyprint with the other operator before `trust add`.

    Example: `xmesh-agent fingerprint reviewer-01`.
    """
    from xmesh_agent.identity import load_identity

    _check_peer(peer)
    try:
        identity = load_identity(peer)
    except (OSError, ValueError) as exc:
        fail(f"the key of {peer} is unreadable: {exc}")
    if identity is None:
        if as_json:
            fail(f"no key for {peer} (create one with `xmesh-agent keygen {peer}`)")
        typer.echo(f"no key for {peer} (create one with `xmesh-agent keygen {peer}`)")
        raise typer.Exit(EXIT_FAIL)
    if as_json:
        print_json(_facts(identity))
        return
    _show(identity, f"identity of {peer}")


GroupOption = typer.Option(..., "--group", "-g", help="The mesh group the pin applies to.")


@trust_app.command("add")
def trust_add(
    group: str = GroupOption,
    peer: str = typer.Option(..., "--peer", "-p", help="The peer's name."),
    public_key: str = typer.Option(..., "--public-key", "-k", help="Its public key, base64url (32 bytes)."),
) -> None:
    """Pin a peer's public key for a group (replaces an earlier pin of that peer).

    Example: `xmesh-agent trust add --group team --peer writer-01 --public-key Yx0…`.
    """
    from xmesh_agent.identity import b64url_decode
    from xmesh_agent.identity import fingerprint as full_fingerprint
    from xmesh_agent.mmp import trust

    try:
        path = trust.add(group, peer, public_key)
    except trust.TrustError as exc:
        fail(f"not trusted: {exc}", EXIT_USAGE)
    raw = b64url_decode(public_key.strip())
    typer.echo(f"trusted {peer} in group {group} ({path})")
    typer.echo(f"  keyprint:    {full_fingerprint(raw)[:16]}")
    typer.echo(f"  fingerprint: {full_fingerprint(raw)}")
    typer.echo(
        "  verify this keyprint with the peer's operator (`xmesh-agent fingerprint <peer>`) before relying on it"
    )


@trust_app.command("list")
def trust_list(
    group: str = GroupOption,
    as_json: bool = typer.Option(False, "--json", help="A JSON list of {peer, keyprint, public_key}."),
) -> None:
    """List the pinned keys of a group. Example: `xmesh-agent trust list --group team`."""
    from xmesh_agent.identity import b64url_decode, keyprint
    from xmesh_agent.mmp import trust

    try:
        pins = trust.list(group)
    except trust.TrustError as exc:
        fail(str(exc), EXIT_USAGE)
    rows = [{"peer": p, "keyprint": keyprint(b64url_decode(k)), "public_key": k} for p, k in pins.items()]
    if as_json:
        print_json(rows)
    elif not rows:
        typer.echo(f"no trusted keys in group {group}")
    else:
        for row in rows:
            typer.echo(f"{row['keyprint']}  {row['peer']}  {row['public_key']}")
    raise typer.Exit(EXIT_OK)


@trust_app.command("remove")
def trust_remove(
    group: str = GroupOption,
    peer: str = typer.Option(..., "--peer", "-p", help="The peer to unpin."),
) -> None:
    """Unpin a peer's key: in strict groups its CMBs are refused from now on.

    Example: `xmesh-agent trust remove --group team --peer writer-01`.
    """
    from xmesh_agent.mmp import trust

    try:
        removed = trust.remove(group, peer)
    except trust.TrustError as exc:
        fail(str(exc), EXIT_USAGE)
    if not removed:
        fail(f"{peer} is not pinned in group {group}")
    typer.echo(f"removed {peer} from group {group}")


PeerOption = typer.Option(..., "--peer", "-p", help="The local peer whose first-sight record to read.")


def _verify_file(peer: str):  # noqa: ANN202 - pathlib.Path
    from xmesh_agent import paths
    from xmesh_agent.mmp.verify import verify_db_path

    _check_peer(peer)
    home = paths.peer_dir(peer)
    if not home.is_dir():
        fail(f"no peer {peer} on this machine ({home} does not exist)", EXIT_USAGE)
    return verify_db_path(home / "cmbs.db")


def _sight_row(s) -> dict:  # noqa: ANN001 - xmesh_agent.mmp.first_sight.FirstSight
    from xmesh_agent.identity import b64url_encode, keyprint

    return {
        "identity": s.identity,
        "kind": s.kind,
        "keyprint": keyprint(s.public_key),
        "public_key": b64url_encode(s.public_key),
        "proven": s.proven,
        "bound_at_ms": s.bound_at_ms,
    }


@trust_app.command("seen")
def trust_seen(
    peer: str = PeerOption,
    as_json: bool = typer.Option(
        False, "--json", help="A JSON list of {identity, kind, keyprint, public_key, proven, bound_at_ms}."
    ),
) -> None:
    """What a peer took on trust at first sight: nodeIds bound to keys, names pinned (tofu).

    Each nodeId is bound to the first key that claimed it and, under tofu, each name to the first key
    seen under it. A squatter who reached a nodeId first shows here with its key; `trust forget` undoes it.

    Example: `xmesh-agent trust seen --peer reviewer-01`.
    """
    from xmesh_agent.mmp.first_sight import first_sights

    rows = [_sight_row(s) for s in first_sights(_verify_file(peer))]
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo(f"{peer} has taken no key on trust yet")
        return
    for row in rows:
        proof = "proven" if row["proven"] else "unproven" if row["kind"] == "node_id" else "name"
        typer.echo(f"{row['keyprint']}  {proof:<8}  {row['identity']}")


@trust_app.command("forget")
def trust_forget(
    identity: str = typer.Argument(
        ..., help="The nodeId (any case) or name to forget, as `trust seen` shows it."
    ),
    peer: str = PeerOption,
) -> None:
    """Forget what a stopped peer took on trust about a nodeId or name: its key, and that it signed before.

    For a squatter who claimed a nodeId or name before its owner ever met this peer: the owner is
    refused until the binding goes. The next handshake under that identity binds afresh, so do it when
    you know who will come first (compare keyprints with `xmesh-agent fingerprint` on their side).

    Example: `xmesh-agent stop reviewer-01 && xmesh-agent trust forget --peer reviewer-01 0193a1b2-…`.
    """
    from xmesh_agent.mmp.first_sight import forget
    from xmesh_agent.workers.control import control_path, is_live

    path = _verify_file(peer)
    if is_live(control_path(peer)):
        fail(
            f"{peer} is running and keeps the keys it has read; stop it (`xmesh-agent stop {peer}`), "
            "forget, then start it again"
        )
    gone = forget(path, identity.strip())
    if not gone:
        fail(f"{peer} holds nothing on trust for {identity!r} (see `xmesh-agent trust seen --peer {peer}`)")
    for row in map(_sight_row, gone):
        kind = "nodeId" if row["kind"] == "node_id" else "name"
        typer.echo(f"forgot {kind} {row['identity']} (keyprint {row['keyprint']})")
    typer.echo("the next handshake under it binds afresh")
