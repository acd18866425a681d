"""A seeding node for the multi-host tests: joins the mesh from inside one host and publishes signed CMBs.

Run in a host's namespace (`ip netns exec`), with that host's XMESH_HOME:

    python seeder.py --name seed-h1 --group lan --discovery mdns --wait-for beta \
        --focus "task one" [--every 2 --count 20] --out published.jsonl

It waits until every `--wait-for` peer is connected, publishes `--count` CMBs `--every` seconds apart
(focus "<focus> #<i>"), writes one JSON line per CMB ({key, i, at, sent}) to `--out`, keeps running
`--linger` seconds (its recent CMBs are replayed to peers that reconnect), then leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from xmesh_agent import paths
from xmesh_agent.identity import load_or_create_identity
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.store import CMBStore


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--discovery", default="registry,mdns")
    p.add_argument("--peer", action="append", default=[], help="a static peer host:port")
    p.add_argument("--relay")
    p.add_argument("--relay-token")
    p.add_argument("--wait-for", action="append", default=[], help="a peer name to wait for")
    p.add_argument("--wait-timeout", type=float, default=60)
    p.add_argument("--focus", required=True)
    p.add_argument("--issue", default="")
    p.add_argument("--intent", default="")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--every", type=float, default=1.0)
    p.add_argument("--linger", type=float, default=3.0)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


async def main(argv: list[str]) -> int:
    a = _args(argv)
    identity = load_or_create_identity(a.name)
    home = paths.ensure_dir(paths.peer_dir(a.name))
    store = CMBStore(home / "cmbs.db")
    node = MeshNode(
        identity,
        a.group,
        store,
        host=a.host,
        static_peers=a.peer,
        discovery=[d for d in a.discovery.split(",") if d],
        relay_url=a.relay,
        relay_token=a.relay_token,
        on_event=lambda name, data: print(json.dumps({"evt": name, "at": time.time(), **data}), flush=True),
    )
    await node.start()
    out = Path(a.out)
    try:
        deadline = time.monotonic() + a.wait_timeout
        while not set(a.wait_for) <= {p.name for p in node.peers()}:
            if time.monotonic() > deadline:
                seen = sorted(p.name for p in node.peers())
                print(
                    f"seeder: {a.wait_for} not connected within {a.wait_timeout}s (have {seen})", flush=True
                )
                return 1
            await asyncio.sleep(0.1)
        for i in range(a.count):
            texts = {"focus": f"{a.focus} #{i}" if a.count > 1 else a.focus}
            if a.issue:
                texts["issue"] = a.issue
            if a.intent:
                texts["intent"] = a.intent
            cmb = mint(texts, identity=identity, group=a.group, created_at=int(time.time() * 1000))
            sent = await node.publish(cmb)
            with out.open("a") as fh:
                fh.write(json.dumps({"key": cmb.key, "i": i, "at": time.time(), "sent": sent}) + "\n")
            if i + 1 < a.count:
                await asyncio.sleep(a.every)
        await asyncio.sleep(a.linger)
        return 0
    finally:
        await node.stop()
        store.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
