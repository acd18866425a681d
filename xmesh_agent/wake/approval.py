"""Signed approval decisions: only who can read a peer's key decides the wakes it holds at a gate.

Whoever can reach Temporal can send a wake its `decide` update (the embedded dev server has no
authentication). So `xmesh-agent approve`/`deny` signs the decision with the peer's ed25519 identity key
(0600 under ~/.xmesh/keys), over the wake's workflow id and run id, the decision, who and why, and when;
the wake's update validator checks it against the public key the peer's own check_safety activity put
in the wake's history when it held the reply. Everything the check reads is in the history or the
update, so replays decide the same; a decision signed for one wake is worthless for any other.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from xmesh_agent.identity import NodeIdentity, b64url_decode, b64url_encode, keyprint, verify_signature
from xmesh_agent.secret_shapes import mask_secrets
from xmesh_agent.wake.payloads import ApprovalDecision, SafetyVerdict

log = logging.getLogger("xmesh.approval")
_SIGNATURE = re.compile(r"^[A-Za-z0-9_-]{86}$")
_KEY_HEX = re.compile(r"cmb1-([0-9a-f]{64})")

DOMAIN = "xmesh-approval/1"
MAX_SKEW_MS = 10 * 60 * 1000
"""How far the signing time may be from the wake's clock: a decision cannot be kept for later."""


def message(workflow_id: str, run_id: str, decision: ApprovalDecision) -> bytes:
    body = {
        "workflow_id": workflow_id,
        "run_id": run_id,
        "approved": decision.approved,
        "by": decision.by,
        "reason": decision.reason,
        "signed_at_ms": decision.signed_at_ms,
    }
    return (DOMAIN + "\n" + json.dumps(body, sort_keys=True, separators=(",", ":"))).encode()


def sign(
    identity: NodeIdentity,
    workflow_id: str,
    run_id: str,
    *,
    approved: bool,
    by: str,
    reason: str,
    now_ms: int,
) -> ApprovalDecision:
    decision = ApprovalDecision(approved=approved, by=by, reason=reason, signed_at_ms=now_ms)
    decision.signature = b64url_encode(identity.sign(message(workflow_id, run_id, decision)))
    return decision


def refusal(
    decision: ApprovalDecision, workflow_id: str, run_id: str, trusted_key: str, peer: str, now_ms: int
) -> str | None:
    """Why the wake refuses `decision`, or None when its peer's operator signed it for this very run."""
    who = f"only the operator of peer {peer} decides its held wakes"
    how = f"`xmesh-agent approve`/`deny` on a machine holding {peer}'s key"
    if not trusted_key:
        return (
            f"{who}, and this wake was held before decisions were signed: it trusts no key and ends "
            "denied at its approval timeout"
        )
    if not decision.signature:
        return f"{who}: this decision is not signed (use {how})"
    if not _SIGNATURE.match(decision.signature):
        return f"{who}: the decision's signature is not base64url ed25519 (86 characters)"
    public_key, signature = b64url_decode(trusted_key), b64url_decode(decision.signature)
    if not verify_signature(public_key, message(workflow_id, run_id, decision), signature):
        return (
            f"{who}: the signature does not verify with {peer}'s key {keyprint(public_key)} "
            f"for this wake (use {how})"
        )
    if abs(now_ms - decision.signed_at_ms) > MAX_SKEW_MS:
        return f"{who}: the decision was signed more than {MAX_SKEW_MS // 60000} minutes from now"
    return None


def short_ref(workflow_id: str) -> str:
    """What `approve`/`deny` take for a wake: the first 12 hex digits of its trigger key, else its id."""
    found = _KEY_HEX.search(workflow_id)
    return found.group(1)[:12] if found else workflow_id


def decide_commands(workflow_id: str) -> str:
    """The exact command lines that decide a held wake."""
    ref = short_ref(workflow_id)
    return f'xmesh-agent approve {ref}   |   xmesh-agent deny {ref} --reason "…"'


def announce(peer: str, workflow_id: str, verdict: SafetyVerdict, fields: dict[str, str]) -> None:
    """Tell whoever watches the peer's output that a reply waits for them, what it says, how to decide."""
    reply = "".join(f"\n  {name}: {mask_secrets(text)}" for name, text in fields.items() if text)
    log.warning(
        "%s: a reply waits for your approval (%s), wake %s:%s\n  decide: %s",
        peer,
        verdict.reason,
        workflow_id,
        reply,
        decide_commands(workflow_id),
    )


def held_lines(wake: dict[str, Any], indent: str = "  ", header: str = "reply it would emit") -> list[str]:
    """A held wake as an operator reads it: why it waits and the whole reply it holds."""
    rule, reason, reply = wake.get("rule"), wake.get("reason"), wake.get("reply")
    lines = [f"{indent}gate: {reason or rule or 'unknown (held by an older version)'}"]
    if reply:
        lines.append(f"{indent}{header}:")
        lines += [f"{indent}  {name}: {text}" for name, text in reply.items() if text]
    elif reply is None:
        lines.append(f"{indent}reply: not recorded (held by an older version; see the Web UI history)")
    return lines


def inbox_lines(wakes: list[dict[str, Any]]) -> list[str]:
    """Every held wake with its reply and the commands that decide it."""
    lines: list[str] = []
    for wake in wakes:
        lines.append(f"{wake['workflow_id']}  (peer {wake['peer']}, held since {wake.get('started') or '?'})")
        lines += held_lines(wake)
        lines.append(f"  decide: {decide_commands(wake['workflow_id'])}")
    return lines
