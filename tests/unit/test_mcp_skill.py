"""The skill file loads as copilots load it, and teaches the tools the server really offers."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from xmesh_agent.cli.mcp_server import build_server
from xmesh_agent.cli.mcp_session import MeshSession
from xmesh_agent.observer import Join

SKILL = Path(__file__).resolve().parents[2] / "skills" / "xmesh" / "SKILL.md"


def _front_matter() -> tuple[dict, str]:
    text = SKILL.read_text()
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert match, "SKILL.md must open with YAML front matter between --- lines"
    return yaml.safe_load(match.group(1)), match.group(2)


def test_front_matter_has_name_and_description():
    meta, body = _front_matter()
    assert meta["name"] == "xmesh"
    assert 50 < len(meta["description"]) <= 1024
    assert body.strip()


async def test_every_tool_is_taught_and_every_taught_tool_exists():
    session = MeshSession(Join.of("skill-check", None, "mcp-skill"))
    tools = {t.name: t for t in await build_server(session, operator=True).list_tools()}
    _, body = _front_matter()
    taught = set(re.findall(r"`(publish|receive|recall|peers|wakes|approve|deny|sym_\w+)`", body))
    assert set(tools) <= taught
    stock = {"publish": "sym_publish", "receive": "sym_receive", "recall": "sym_recall", "peers": "sym_peers"}
    for tool, counterpart in stock.items():
        assert counterpart in tools[tool].description and counterpart in taught
    session.observer.store.close()


async def test_approve_and_deny_only_for_operators():
    session = MeshSession(Join.of("skill-check", None, "mcp-skill"))
    names = {t.name for t in await build_server(session).list_tools()}
    assert "approve" not in names and "deny" not in names and "wakes" in names
    session.observer.store.close()
