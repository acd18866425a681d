"""Mistral's La Plateforme through the `openai` SDK: its chat-completions API is OpenAI-shaped.

What differs is kept here: the base URL and key variable, `max_tokens` for every model (Mistral has
no `max_completion_tokens`), and tool arguments that may arrive as an object (handled by the shared
OpenAI response parser).
"""

from __future__ import annotations

from xmesh_agent.models.openai_adapter import OpenAIAdapter

MISTRAL_BASE_URL = "https://api.mistral.ai/v1"


class MistralAdapter(OpenAIAdapter):
    """One Mistral chat model; errors map onto the shared taxonomy with MISTRAL_API_KEY in auth hints."""

    name = "mistral"
    key_env = "MISTRAL_API_KEY"
    default_base_url = MISTRAL_BASE_URL

    def _token_limit(self, max_tokens: int) -> dict[str, int]:
        return {"max_tokens": max_tokens}
