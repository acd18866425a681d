"""Typed search attributes of a wake: what users filter by in the Web UI and `xmesh-agent wakes`."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PEER = SearchAttributeKey.for_keyword("XmPeer")
GROUP = SearchAttributeKey.for_keyword("XmGroup")
OUTCOME = SearchAttributeKey.for_keyword("XmOutcome")
STAGE = SearchAttributeKey.for_keyword("XmStage")
TRIGGER_AUTHOR = SearchAttributeKey.for_keyword("XmTrigger")
TOKENS = SearchAttributeKey.for_int("XmTokens")
COST = SearchAttributeKey.for_float("XmCostUsd")

ALL = (PEER, GROUP, OUTCOME, STAGE, TRIGGER_AUTHOR, TOKENS, COST)
DEV_SERVER_TYPES = {"KEYWORD": "Keyword", "INT": "Int", "DOUBLE": "Double"}


def dev_server_flags() -> list[str]:
    """`--search-attribute Name=Type` for every key, as `temporal server start-dev` takes them."""
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={DEV_SERVER_TYPES[key.indexed_value_type.name]}"]
    return flags
