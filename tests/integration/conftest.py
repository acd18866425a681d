"""Fixtures the integration tests share."""

from __future__ import annotations

import pytest

from tests.fakes.model_servers import FakeOpenAIServer


@pytest.fixture
def fake():
    """A loopback server speaking the OpenAI chat API, scripted per test."""
    with FakeOpenAIServer() as srv:
        yield srv
