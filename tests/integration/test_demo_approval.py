"""The demo with a gate that holds the writer's replies for approval (issue 24 item 1).

The demo says at once that a reply waits, shows it, and prints the command that decides it; the
operator approves from another process (the real CLI) and the conversation goes on to its end.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.integration.test_approval_auth import xmesh
from xmesh_agent.config import parse_config
from xmesh_agent.demo.runner import DemoOptions, run_demo
from xmesh_agent.scenario import load_scenario, resolve, with_overrides
from xmesh_agent.workers.client import TemporalTarget

pytestmark = pytest.mark.slow
GATE = {"name": "writer-takes-up", "pattern": r"\bwriter takes up\b", "action": "approve"}


def _pair_with_a_gated_writer():
    spec, configs = load_scenario(resolve("pair"))
    group = f"t-{uuid.uuid4().hex[:8]}"
    spec = spec.model_copy(update={"scenario": spec.scenario.model_copy(update={"group": group})})
    out = []
    for cfg in configs:
        data = with_overrides(cfg, group=group, adapter="offline").model_dump(exclude_none=True)
        if cfg.name == "writer-01":
            data["safety"] = {**data.get("safety", {}), "gates": [GATE], "approval_timeout_seconds": 600}
        data["budget"]["max_wakes_per_minute"] = 30
        out.append(parse_config(data))
    return spec, out


async def test_the_demo_announces_a_held_reply_and_goes_on_once_approved(temporal_env):
    spec, configs = _pair_with_a_gated_writer()
    address = temporal_env.client.service_client.config.target_host
    lines: list[str] = []
    demo = asyncio.create_task(
        run_demo(
            spec,
            configs,
            target=TemporalTarget(address=address),
            options=DemoOptions(duration=90),
            say=lines.append,
        )
    )
    approved = 0
    try:
        while not demo.done():
            held = [line for line in lines if line.startswith("  held  writer-01")]
            if len(held) > approved:
                i = lines.index(held[approved])
                assert lines[i + 1].strip() == 'gate: rule writer-takes-up on focus: "writer takes up"'
                assert lines[i + 2].strip() == "reply it would emit:"
                assert any("focus: writer takes up" in line for line in lines[i + 3 : i + 6])
                command = next(line for line in lines[i:] if "decide in another terminal:" in line)
                ref = command.split("xmesh-agent approve ", 1)[1].split()[0]
                result = await xmesh(address, "approve", ref)
                assert result.returncode == 0, result.stdout + result.stderr
                approved += 1
            await asyncio.sleep(0.2)
        report = await demo
    finally:
        if not demo.done():
            demo.cancel()
    transcript = "\n".join(lines)
    assert report.error is None, report.error
    assert approved >= 1, transcript
    assert not report.timed_out and not report.tally.held, transcript
    assert report.tally.by_outcome().get("emitted", 0) >= 2, transcript
    emitted_by_writer = [
        r for r in report.tally.closed.values() if r.peer == "writer-01" and r.outcome == "emitted"
    ]
    assert len(emitted_by_writer) == approved, transcript
