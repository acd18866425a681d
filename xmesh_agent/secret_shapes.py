"""Text shaped like a credential, masked without knowing the credential: for error text bound for logs.

A model server may echo the key it was given, whole or in part (`Incorrect API key provided:
sk-proj-abc1****wxyz`); an exact match of the configured key misses the partial echo, so error text is
scrubbed by shape: a known key prefix, then key characters or the server's own mask stars.
"""

from __future__ import annotations

import re

KEY_PREFIXES = r"sk-ant-|sk-|AKIA|ASIA|gh[pousr]_|github_pat_|xox[bp]-"
"""The public prefixes of the key shapes the approval gates block (Anthropic, OpenAI, AWS, GitHub, Slack)."""

_KEY = re.compile(rf"(?<![A-Za-z0-9])({KEY_PREFIXES})[A-Za-z0-9_*.\-]{{4,}}")
_PRIVATE_KEY = re.compile(
    r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[ A-Z0-9]*-----|\Z)", re.DOTALL
)


def mask_secrets(text: str) -> str:
    """`text` with every private key and every key shape, whole or echoed in part, cut to its prefix and `****`."""
    text = _PRIVATE_KEY.sub("-----BEGIN****", text)
    return _KEY.sub(lambda m: f"{m.group(1)}****", text)
