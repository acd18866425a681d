"""The adapter interface every model speaks, and the errors the wake's retry policy reads."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, Field

from xmesh_agent.roles import CAT7

EMIT_TOOL_NAME = "emit_cmb"
EMIT_TOOL_DESCRIPTION = (
    "Emit your answer to the mesh as a CAT7 Cognitive Memory Block. Fill only the fields your "
    "role has something to say about; leave the others out."
)
EMIT_TOOL_SCHEMA: dict = {
    "type": "object",
    "properties": {f: {"type": "string"} for f in CAT7},
    "additionalProperties": False,
}


class ChatMessage(BaseModel):
    role: str  # "user" | "assistant"
    content: str


class ModelRequest(BaseModel):
    system: str
    messages: list[ChatMessage]
    max_tokens: int = 1024
    role: str = Field(default="", description="The peer's role; a hint only the offline adapter reads.")
    trigger: dict[str, str] = Field(
        default_factory=dict, description="The admitted CMB's field texts; a hint for the offline adapter."
    )


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0


class ModelResponse(BaseModel):
    """What a model said: the emit_cmb fields if it called the tool, else its text."""

    fields: dict[str, str] | None = None
    text: str = ""
    stop_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = Field(default=None, description="None when the price is unknown.")
    model: str = ""
    adapter: str = ""


class ModelError(Exception):
    """Base of the shared error taxonomy. Messages never contain a credential."""

    transient: bool = False

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class TransientModelError(ModelError):
    """Worth retrying: 429, 5xx, 529, timeouts, connection resets."""

    transient = True


class PermanentModelError(ModelError):
    """Retrying cannot help: bad key, invalid request, unknown model."""


class CircuitOpenError(PermanentModelError):
    """This model's breaker is open: the wake moves on to its next model without calling this one."""


class ModelAdapter(Protocol):
    name: str
    model: str

    async def complete(self, request: ModelRequest) -> ModelResponse: ...

    async def aclose(self) -> None: ...
