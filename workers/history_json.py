"""A wake's history as readable JSON, and back to the form Temporal's replayer reads.

Temporal's JSON keeps every payload (inputs, results, memo, search attributes, details) as base64.
`readable` decodes each JSON payload with the data converter into `{"metadata": {...}, "json": value}`,
so `wakes export` shows the trigger, the model's reply and the decisions as text; `replayable` turns
such a file back into Temporal's form for `replay --history`. Payloads of other encodings stay as they are.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter

DECODED = (b"json/plain", b"binary/null")


def _is_payload(node: dict[str, Any]) -> bool:
    meta = node.get("metadata")
    return isinstance(meta, dict) and "encoding" in meta and set(node) <= {"metadata", "data", "json"}


def _decode(node: dict[str, Any]) -> dict[str, Any]:
    meta = {k: base64.b64decode(v) for k, v in node["metadata"].items()}
    if meta["encoding"] not in DECODED or "json" in node:
        return node
    payload = Payload(metadata=meta, data=base64.b64decode(node.get("data", "")))
    (value,) = pydantic_data_converter.payload_converter.from_payloads([payload])
    return {"metadata": {k: v.decode() for k, v in meta.items()}, "json": value}


def _encode(node: dict[str, Any]) -> dict[str, Any]:
    if "json" not in node:
        return node
    meta = {k: base64.b64encode(v.encode()).decode() for k, v in node["metadata"].items()}
    out: dict[str, Any] = {"metadata": meta}
    if node["metadata"]["encoding"] != "binary/null":
        data = json.dumps(node["json"], separators=(",", ":"), ensure_ascii=False).encode()
        out["data"] = base64.b64encode(data).decode()
    return out


def _walk(node: Any, convert) -> Any:  # noqa: ANN001 - one of _decode / _encode
    if isinstance(node, dict):
        if _is_payload(node):
            return convert(node)
        return {k: _walk(v, convert) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, convert) for v in node]
    return node


def readable(history_json: str) -> str:
    """Temporal's history JSON with every JSON payload decoded in place."""
    return json.dumps(_walk(json.loads(history_json), _decode), indent=2, ensure_ascii=False)


def replayable(history_json: str) -> str:
    """The inverse of `readable`; Temporal's own JSON passes through unchanged."""
    return json.dumps(_walk(json.loads(history_json), _encode))
