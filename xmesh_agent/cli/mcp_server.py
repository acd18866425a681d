"""`xmesh-agent mcp`: the mesh as MCP tools over stdio, so a copilot becomes a node of a group.

Tools mirror the stock MMP bridge where they do the same job (each description names its
counterpart), so a skill written for that bridge carries over. stdout is the MCP transport:
everything else (logs, warnings) goes to stderr.
"""

from __future__ import annotations

import logging
import sys
from contextlib import asynccontextmanager
from typing import Annotated, Any

from pydantic import Field

from xmesh_agent.cli.mcp_session import BridgeError, MeshSession

INSTRUCTIONS = (
    "You are a node of an MMP mesh group: other agents (xmesh-agent peers, stock MMP nodes) read what you "
    "publish and answer it. A message is a CMB of seven CAT7 fields (focus, issue, intent, motivation, "
    "commitment, perspective, mood). Call `receive` at the start of a turn and while you wait for answers; "
    "`publish` to say something to the group (or `to` one peer), with `parents` set to the key you answer; "
    "`recall` to search what the mesh said; `peers` to see who is there."
)

Text = Annotated[str, Field(description="Free text; empty leaves the field neutral.")]


def build_server(session: MeshSession, *, operator: bool = False, temporal_address: str | None = None) -> Any:
    from mcp.server.fastmcp import FastMCP
    from mcp.server.fastmcp.exceptions import ToolError

    @asynccontextmanager
    async def lifespan(_server: Any):  # noqa: ANN202 - the SDK's lifespan shape
        await session.start()
        try:
            yield {}
        finally:
            await session.stop()

    server = FastMCP("xmesh", instructions=INSTRUCTIONS, lifespan=lifespan, log_level="WARNING")

    @server.tool()
    async def publish(
        focus: Annotated[str, Field(description="What the CMB is about: the task, the topic. Required.")],
        issue: Text = "",
        intent: Text = "",
        motivation: Text = "",
        commitment: Text = "",
        perspective: Text = "",
        mood: Text = "",
        valence: Annotated[float | None, Field(ge=-1, le=1, description="Mood valence, -1..1.")] = None,
        arousal: Annotated[float | None, Field(ge=-1, le=1, description="Mood arousal, -1..1.")] = None,
        to: Annotated[
            str | None,
            Field(
                description="One peer's name or node id: a directed CMB that wakes that peer. Omit for all."
            ),
        ] = None,
        parents: Annotated[
            list[str] | None,
            Field(description="Keys (or unique prefixes) of the CMBs this one answers: its lineage."),
        ] = None,
    ) -> dict[str, Any]:
        """Publish a signed CAT7 CMB to the group, or to one peer with `to`. Does what the stock bridge's
        sym_publish does (and sym_send when `to` is given). Returns its key and the peers it reached;
        an error when no peer could be reached. Answer a CMB by putting its key in `parents`."""
        fields = dict(
            focus=focus,
            issue=issue,
            intent=intent,
            motivation=motivation,
            commitment=commitment,
            perspective=perspective,
            mood=mood,
        )
        affect = (valence or 0.0, arousal or 0.0) if valence is not None or arousal is not None else None
        try:
            return await session.publish(fields, to=to, parents=parents or [], mood=affect)
        except BridgeError as exc:
            raise ToolError(str(exc)) from None

    @server.tool()
    async def receive(
        limit: Annotated[int, Field(ge=1, le=1000, description="At most this many, oldest first.")] = 50,
        peek: Annotated[bool, Field(description="Leave them for the next call too.")] = False,
        wait: Annotated[
            float, Field(ge=0, le=60, description="When nothing has arrived, wait up to this many seconds.")
        ] = 0,
    ) -> dict[str, Any]:
        """The CMBs that arrived from the mesh since the last call (a delivery feed, not a search):
        key, author, parents, the fields with text, and `directed` when one was sent to you alone.
        Does what the stock bridge's sym_receive does. `more` says how many still wait; `wait` saves
        polling while peers think."""
        return await session.receive(limit, peek, wait)

    @server.tool()
    def recall(
        query: Annotated[str, Field(description="Words to look for; empty lists the newest.")] = "",
        author: Annotated[str | None, Field(description="Only CMBs of this author.")] = None,
        since: Annotated[str | None, Field(description="Only CMBs since: 30m, 1h, 2d, 1w or a date.")] = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 10,
    ) -> list[dict[str, Any]]:
        """Search what the mesh said in this group, as this node and the peers on this machine hold it,
        best match first: key, author, created_at, parents, the seven fields, who holds it. Does what
        the stock bridge's sym_recall does."""
        from xmesh_agent.recall import RecallError, parse_since

        try:
            since_ms = parse_since(since) if since else None
            return session.recall(query, author=author, since_ms=since_ms, limit=limit)
        except (BridgeError, RecallError) as exc:
            raise ToolError(str(exc)) from None

    @server.tool()
    def peers() -> dict[str, Any]:
        """The peers connected now (name, node id, transport) and this node's own name, node id and group.
        Does what the stock bridge's sym_peers (and sym_status) do."""
        return {"self": session.status(), "peers": session.peers()}

    @server.tool()
    async def wakes(
        peer: Annotated[str | None, Field(description="Only this peer's wakes.")] = None,
        stage: Annotated[
            str | None, Field(description="awaiting-approval lists the wakes held at an approval gate.")
        ] = None,
        outcome: Annotated[
            str | None, Field(description="emitted, rejected, suppressed-gate, denied, …")
        ] = None,
        since: Annotated[str | None, Field(description="30m, 1h, 2d or a date.")] = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
    ) -> list[dict[str, Any]]:
        """The group's wakes from Temporal, newest first: workflow id, peer, trigger author and key,
        outcome and its reason, stage, tokens, cost, and for a wake held at an approval gate the rule
        and the reply it would emit (`held`). No counterpart in the stock bridge."""
        try:
            return await session.wakes(
                peer=peer,
                stage=stage,
                outcome=outcome,
                since=since,
                limit=limit,
                temporal_address=temporal_address,
            )
        except BridgeError as exc:
            raise ToolError(str(exc)) from None

    if operator:

        @server.tool()
        async def approve(
            workflow_id: Annotated[
                str,
                Field(
                    description="A wake held at stage awaiting-approval (see wakes): its id, or a unique prefix of it or of its trigger key."
                ),
            ],
        ) -> str:
            """Let a wake held at an approval gate emit its reply. Only when the human you work for has
            decided so: the gate exists so that a person approves."""
            return await _decide(workflow_id, True, "")

        @server.tool()
        async def deny(
            workflow_id: Annotated[
                str,
                Field(
                    description="A wake held at stage awaiting-approval (see wakes): its id, or a unique prefix of it or of its trigger key."
                ),
            ],
            reason: Annotated[str, Field(description="Why; recorded as the wake's outcome reason.")],
        ) -> str:
            """Stop a wake held at an approval gate: it ends `denied` and emits nothing."""
            return await _decide(workflow_id, False, reason)

    async def _decide(workflow_id: str, approved: bool, reason: str) -> str:
        try:
            answer = await session.decide(
                workflow_id, approved, f"mcp:{session.name}", reason, temporal_address=temporal_address
            )
        except BridgeError as exc:
            raise ToolError(str(exc)) from None
        return f"{workflow_id}: {answer}"

    return server


def run_stdio(session: MeshSession, *, operator: bool, temporal_address: str | None) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="xmesh-mcp %(levelname)s %(message)s"
    )
    build_server(session, operator=operator, temporal_address=temporal_address).run("stdio")
