"""Model adapters: one interface over Anthropic, OpenAI(-compatible), Ollama and offline."""
