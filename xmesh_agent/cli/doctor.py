"""The checks behind `xmesh-agent doctor`, and the legacy-directory helpers behind `migrate`.

Doctor only reads: files under the runtime home, local ports, the environment (names, never values)
and, with a 2 s limit, the local Ollama. Each problem becomes one issue line saying what to do.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xmesh_agent import paths
from xmesh_agent.process import pid_alive

MIN_PYTHON = (3, 11)
ENV_VARS = (
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "MISTRAL_API_KEY",
    "OLLAMA_HOST",
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_API_KEY",
    "XMESH_HOME",
)
OLLAMA_DEFAULT = "http://127.0.0.1:11434"
OLLAMA_TIMEOUT = 2.0
_ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")

Echo = Callable[[str], object]
Report = dict[str, Any]


def _section(echo: Echo, title: str) -> None:
    echo(f"\n{title}")


def check_runtime(echo: Echo, issues: list[str], report: Report) -> None:
    _section(echo, "runtime")
    version = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info[:2] >= MIN_PYTHON
    echo(f"  python {version}" + ("" if ok else f"  ⚠ needs {'.'.join(map(str, MIN_PYTHON))}+"))
    if not ok:
        issues.append(
            f"Python {version} is too old: install Python {'.'.join(map(str, MIN_PYTHON))} or newer"
        )
    home = paths.xmesh_home()
    echo(f"  home {home} ({'exists' if home.is_dir() else 'not created yet'})")
    legacy = paths.LEGACY_HOME
    if legacy.exists():
        echo(f"  legacy {legacy} exists: `xmesh-agent migrate` shows how to move it")
    report["runtime"] = {
        "python": version,
        "python_ok": ok,
        "home": str(home),
        "home_exists": home.is_dir(),
        "legacy_home": str(legacy) if legacy.exists() else None,
    }


def check_temporal(echo: Echo, issues: list[str], report: Report) -> None:
    from xmesh_agent.workers.devserver import (
        DEFAULT_PORT,
        DEFAULT_UI_PORT,
        ServerError,
        port_open,
        running_server,
        temporal_binary,
    )

    _section(echo, "temporal")
    facts: Report = report.setdefault("temporal", {})
    try:
        facts["binary"] = str(temporal_binary())
        echo(f"  binary {facts['binary']}")
    except ServerError as exc:
        facts["binary"] = None
        echo("  binary ⚠ not found")
        issues.append(str(exc))
    info = running_server()
    facts["embedded_server"] = (
        {"pid": info.pid, "address": info.address, "ui_url": info.ui_url} if info else None
    )
    facts["ports"] = []
    if info:
        echo(f"  embedded server running: pid {info.pid}, {info.address}, Web UI {info.ui_url}")
    else:
        echo("  embedded server not running (a peer starts it on demand)")
    ours = {info.port, int(info.ui_url.rsplit(":", 1)[1])} if info else set()
    for port, what in ((DEFAULT_PORT, "frontend"), (DEFAULT_UI_PORT, "Web UI")):
        if port in ours:
            state = "ours (embedded server)"
        elif port_open(port):
            state = "in use by another process (the embedded server would pick a free port)"
        else:
            state = "free"
        echo(f"  port {port} ({what}): {state}")
        facts["ports"].append({"port": port, "use": what, "state": state})
    external = os.environ.get("TEMPORAL_ADDRESS")
    if external:
        from xmesh_agent.workers.client import probe_problem

        tls = bool(os.environ.get("TEMPORAL_TLS") or os.environ.get("TEMPORAL_API_KEY"))
        problem = probe_problem(external, tls=tls)
        echo(f"  TEMPORAL_ADDRESS {external}: {'reachable' if problem is None else '⚠ ' + problem}")
        facts["temporal_address"] = {"address": external, "reachable": problem is None, "problem": problem}
        if problem:
            issues.append(f"TEMPORAL_ADDRESS: {problem}; start it, fix it or unset the variable")


def check_keys(echo: Echo, issues: list[str], report: Report) -> None:
    _section(echo, "identity keys")
    keys = sorted(paths.keys_dir().glob("*.key")) if paths.keys_dir().is_dir() else []
    rows: list[Report] = report.setdefault("keys", [])
    if not keys:
        echo("  no keys (a peer creates its key on first run; `xmesh-agent keygen <peer>` makes one now)")
    for key in keys:
        mode = key.stat().st_mode & 0o777
        try:
            meta = json.loads(key.with_suffix(".json").read_text())
            shown = meta.get("keyprint") or "?"
        except (OSError, ValueError):
            shown = "?"
        flag = "" if mode == 0o600 else "  ⚠"
        echo(f"  {key.stem} keyprint={shown} mode={mode:o}{flag}")
        rows.append({"peer": key.stem, "keyprint": shown, "mode": f"{mode:o}", "path": str(key)})
        if mode != 0o600:
            issues.append(f"private key {key} has mode {mode:o}: chmod 600 {key}")
    trusted = paths.xmesh_home() / "trusted-keys"
    groups = sorted(p for p in trusted.iterdir() if p.is_dir()) if trusted.is_dir() else []
    _section(echo, "trusted keys")
    report["trusted_keys"] = [{"group": g.name, "pinned": len(list(g.glob("*.json")))} for g in groups]
    if not groups:
        echo("  none pinned (`xmesh-agent trust add` pins a peer's key for strict admission)")
    for group in groups:
        echo(f"  group {group.name}: {len(list(group.glob('*.json')))} pinned")


def check_environment(echo: Echo, issues: list[str], report: Report) -> None:
    _section(echo, "environment")
    for name in ENV_VARS:
        value = os.environ.get(name)
        echo(f"  {name}: {'set (' + str(len(value)) + ' chars)' if value else 'not set'}")
        report.setdefault("environment", {})[name.lower()] = bool(value)


def ollama_url() -> str:
    host = os.environ.get("OLLAMA_HOST", "").strip() or OLLAMA_DEFAULT
    return host if "://" in host else f"http://{host}"


def check_ollama(echo: Echo, issues: list[str], report: Report) -> None:
    import httpx

    _section(echo, "ollama")
    url = ollama_url().rstrip("/")
    try:
        response = httpx.get(f"{url}/api/tags", timeout=OLLAMA_TIMEOUT)
        models = (
            [m.get("name", "?") for m in response.json().get("models", [])] if response.is_success else []
        )
        state = (
            f"reachable, {len(models)} model(s)" if response.is_success else f"HTTP {response.status_code}"
        )
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        state = f'not reachable ({type(exc).__name__}); only peers with adapter = "ollama" need it'
    echo(f"  {url}: {state}")
    report["ollama"] = {"url": url, "state": state}


def check_peers(echo: Echo, issues: list[str], report: Report) -> None:
    _section(echo, "running peers")
    root = paths.xmesh_home() / "peers"
    files = sorted(root.glob("*/peer.json")) if root.is_dir() else []
    rows: list[Report] = report.setdefault("peers", [])
    if not files:
        echo("  none (start one with `xmesh-agent run --config <peer>.toml`)")
    for status in files:
        try:
            data = json.loads(status.read_text())
            pid = int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            echo(f"  {status.parent.name}: ⚠ unreadable {status}")
            rows.append({"peer": status.parent.name, "state": "unreadable"})
            issues.append(f"unreadable peer status {status}: remove it if the peer is not running")
            continue
        rows.append({"peer": status.parent.name, "state": "alive" if pid_alive(pid) else "stale", "pid": pid})
        if pid_alive(pid):
            echo(
                f"  {status.parent.name}: ALIVE pid {pid} group={data.get('group')} port={data.get('port')} "
                f"queue={data.get('taskQueue')}"
            )
            _check_peer_temporal(status.parent.name, data.get("temporal"), echo, issues)
        else:
            echo(f"  {status.parent.name}: ⚠ STALE (pid {pid} is gone)")
            issues.append(f"stale status of {status.parent.name} (pid {pid} not running): rm {status}")


def _check_peer_temporal(name: str, temporal: object, echo: Echo, issues: list[str]) -> None:
    """A running peer whose Temporal is gone (or moved without it) wakes nobody: say so."""
    from xmesh_agent.workers.devserver import port_open, running_server

    if not isinstance(temporal, dict) or not isinstance(temporal.get("address"), str):
        return
    address = temporal["address"]
    server = running_server() if temporal.get("embedded") else None
    host, _, port = address.rpartition(":")
    why = None
    if temporal.get("embedded") and server is None:
        why = "the embedded server is not running (`xmesh-agent server` starts it; the peer reconnects)"
    elif server is not None and server.address != address:
        why = f"the embedded server is now at {server.address} and the peer has not followed yet"
    elif temporal.get("lostSince"):
        why = "it stopped answering the peer's health checks"
    elif not (port.isdigit() and port_open(int(port), host or "127.0.0.1")):
        why = "nothing listens there"
    if why is None:
        echo(f"    temporal {address}: reachable")
        return
    echo(f"    temporal {address}: ⚠ LOST ({why})")
    issues.append(f"peer {name} has lost Temporal at {address}: {why}")


CHECKS = (check_runtime, check_temporal, check_keys, check_environment, check_ollama, check_peers)


def run_doctor(echo: Echo, report: Report | None = None) -> list[str]:
    """Print every section (and fill `report` with the same facts); return the issues (empty = healthy)."""
    issues: list[str] = []
    report = {} if report is None else report
    for check in CHECKS:
        check(echo, issues, report)
    echo("")
    return issues


def legacy_plan(source: Path) -> dict[str, int]:
    """What a legacy runtime dir holds, by kind (sockets mean a legacy peer may still be running)."""
    counts = {"keys": 0, "trustedKeys": 0, "state": 0, "sockets": 0, "other": 0}
    for path in source.rglob("*"):
        if path.is_dir():
            continue
        rel = path.relative_to(source).parts
        if path.suffix == ".sock" or path.is_socket():
            counts["sockets"] += 1
        elif rel[0] == "keys" and path.suffix == ".key":
            counts["keys"] += 1
        elif rel[0] == "trusted-keys" and path.suffix == ".json":
            counts["trustedKeys"] += 1
        elif rel[0] == "state":
            counts["state"] += 1
        else:
            counts["other"] += 1
    return counts


def convert_legacy(home: Path) -> list[str]:
    """Rewrite moved legacy keys (PKCS#8 DER) and trust pins into this runtime's formats, in place."""
    from nacl.signing import SigningKey

    from xmesh_agent.identity import NodeIdentity, save_identity, uuid7
    from xmesh_agent.mmp import trust

    notes: list[str] = []
    for key in sorted((home / "keys").glob("*.key")):
        raw = key.read_bytes()
        if len(raw) != 48 or not raw.startswith(_ED25519_PKCS8_PREFIX):
            continue
        try:
            meta = json.loads(key.with_suffix(".json").read_text())
        except (OSError, ValueError):
            meta = {}
        identity = NodeIdentity(key.stem, uuid7(), SigningKey(raw[16:]), str(meta.get("createdAt", "")))
        save_identity(identity, force=True)
        notes.append(f"converted key {key.stem} (keyprint {identity.keyprint})")
    for pin in sorted((home / "trusted-keys").glob("*/*.json")):
        try:
            record = json.loads(pin.read_text())
            legacy_key = record.get("publicKeyBase64Url") if "publicKey" not in record else None
            if legacy_key:
                trust.add(pin.parent.name, pin.stem, legacy_key)
                notes.append(f"converted trust pin {pin.parent.name}/{pin.stem}")
        except (OSError, ValueError, AttributeError) as exc:
            notes.append(f"left {pin} as it was ({exc})")
    return notes
