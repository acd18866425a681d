"""How a wake held at an approval gate reads in the terminal: why it waits, its whole reply, the commands."""

from __future__ import annotations

from typing import Any

from xmesh_agent.wake.approval import decide_commands


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
