"""What the control socket reads of a running peer: a protocol, so control.py never imports peer.py.

`workers.peer.Peer` satisfies it; a test can hand the control server anything with these parts.
"""

from __future__ import annotations

from typing import Protocol

from temporalio.client import Client

from xmesh_agent.config import AgentConfig
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.logs import PeerLog
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.wake.safety_state import SafetyState


class MeshPeer(Protocol):
    """One connected peer as `status` and `peers` list it."""

    @property
    def name(self) -> str: ...
    @property
    def node_id(self) -> str: ...
    @property
    def transport(self) -> str: ...
    @property
    def address(self) -> str: ...


class MeshView(Protocol):
    """The mesh node, as far as the control commands look at it."""

    @property
    def port(self) -> int: ...
    def peers(self) -> list[MeshPeer]: ...


class ControlledPeer(Protocol):
    """The parts of a running peer the control server and its commands use."""

    config: AgentConfig
    client: Client
    identity: NodeIdentity
    store: CMBStore
    events: PeerLog
    safety: SafetyState

    @property
    def node(self) -> MeshView: ...

    def stop_listening(self) -> None:
        """Stop starting wakes (the spool keeps new CMBs); in-flight wakes go on."""
        ...
