"""Context assembly: what the model sees, bounded in tokens, chosen by key and rendered from the store."""

from __future__ import annotations

from xmesh_agent.config import AgentConfig
from xmesh_agent.mmp.cmb import CAT7, CMB, NEUTRAL
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.models.base import ChatMessage, ModelRequest
from xmesh_agent.models.common import estimate_tokens
from xmesh_agent.roles import priority_fields
from xmesh_agent.wake.payloads import ContextPlan

DROP_ORDER = ("group-recent", "own-recent", "lineage")
SEPARATOR = "\n\n---\n\n"


def render_cmb(cmb: CMB, label: str = "") -> str:
    head = f"[{label}] " if label else ""
    lines = [f"{head}{cmb.key} from {cmb.created_by}"]
    for field in CAT7:
        text = cmb.text(field)
        if text and text != NEUTRAL:
            lines.append(f"  {field}: {text}")
    return "\n".join(lines)


def preamble(config: AgentConfig) -> str:
    weights = config.weights
    priorities = ", ".join(f"{f}={weights[f]:g}" for f in priority_fields(weights)) or "none"
    return (
        f"You are {config.name}, a peer on the xmesh mesh (group {config.group}).\n"
        f"Role: {config.identity.role}.\n"
        f"Your SVAF field priorities: {priorities}.\n"
        "You answer other peers by calling the emit_cmb tool with a CAT7 Cognitive Memory Block. "
        "Fill only the fields your role has something to say about. If nothing needs saying, "
        "do not call the tool."
    )


INSTRUCTION = (
    "Respond to the ADMITTED block with one emit_cmb call (CAT7 fields; leave irrelevant ones out), "
    "or with no call if it needs no answer."
)


def _section(title: str, cmbs: list[CMB]) -> str:
    return title + "\n" + "\n\n".join(render_cmb(c) for c in cmbs)


def plan_context(store: CMBStore, config: AgentConfig, cmb_key: str) -> ContextPlan:
    """Pick lineage, own and group recents by key; drop whole sections (group, own, lineage) to fit."""
    ctx = config.context
    admitted = store.get(cmb_key)
    if admitted is None:
        raise LookupError(f"CMB {cmb_key} is not in the store")
    lineage = [c for _, c in store.lineage(cmb_key, ctx.k_lineage)]
    own = store.recent_by_author(config.name, ctx.n_own)
    taken = {cmb_key, *(c.key for c in lineage), *(c.key for c in own)}
    group = [
        c
        for c in store.recent_in_group(config.group, ctx.n_group + len(taken), exclude_author=config.name)
        if c.key not in taken
    ][: ctx.n_group]
    sections = {
        "lineage": _section("[LINEAGE ANCESTORS]", lineage) if lineage else "",
        "own-recent": _section("[OWN RECENT CMBs]", own) if own else "",
        "group-recent": _section("[GROUP RECENT CMBs]", group) if group else "",
    }
    fixed = estimate_tokens(preamble(config)) + estimate_tokens(render_cmb(admitted, "ADMITTED"))
    fixed += estimate_tokens(INSTRUCTION)
    total = fixed + sum(estimate_tokens(s) for s in sections.values())
    dropped = []
    for name in DROP_ORDER:
        if total <= ctx.max_context_tokens:
            break
        if sections[name]:
            total -= estimate_tokens(sections[name])
            sections[name] = ""
            dropped.append(name)
    return ContextPlan(
        cmb_key=cmb_key,
        lineage_keys=[c.key for c in lineage] if sections["lineage"] else [],
        own_keys=[c.key for c in own] if sections["own-recent"] else [],
        group_keys=[c.key for c in group] if sections["group-recent"] else [],
        dropped_sections=dropped,
        estimated_tokens=total,
    )


def render_request(store: CMBStore, config: AgentConfig, plan: ContextPlan) -> ModelRequest:
    """Turn a plan back into the model request; keys no longer in the store are skipped."""
    admitted = store.get(plan.cmb_key)
    if admitted is None:
        raise LookupError(f"CMB {plan.cmb_key} is not in the store")

    def resolve(keys: list[str]) -> list[CMB]:
        return [c for c in (store.get(k) for k in keys) if c is not None]

    parts = [render_cmb(admitted, "ADMITTED")]
    for title, keys in (
        ("[LINEAGE ANCESTORS]", plan.lineage_keys),
        ("[OWN RECENT CMBs]", plan.own_keys),
        ("[GROUP RECENT CMBs]", plan.group_keys),
    ):
        cmbs = resolve(keys)
        if cmbs:
            parts.append(_section(title, cmbs))
    parts.append(INSTRUCTION)
    return ModelRequest(
        system=preamble(config),
        messages=[ChatMessage(role="user", content=SEPARATOR.join(parts))],
        max_tokens=config.model.max_tokens_per_call,
    )
