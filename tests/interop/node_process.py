"""A Node.js process that reports JSON lines and takes JSON-line commands: the stock node drivers and
the original runtime the interop tests and the capture recorder run beside our peers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.peer_kit import eventually


class NodeProcess:
    """A Node.js process reporting JSON lines (stdout for the driver, stderr for the runtime)."""

    def __init__(self, argv: list[str], env: dict[str, str], label: str):
        self.argv, self.env, self.label = argv, env, label
        self.events: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task] = []

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [asyncio.create_task(self._read(s)) for s in (self.proc.stdout, self.proc.stderr)]

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "text", "msg": line.decode(errors="replace").rstrip()}
            self.events.append(event if isinstance(event, dict) else {"event": "text", "msg": str(event)})

    def find(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [e for e in self.events if pred(e)]

    async def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        try:
            await eventually(lambda: self.find(pred), timeout=timeout)
        except AssertionError:
            tail = "\n".join(json.dumps(e)[:300] for e in self.events[-30:])
            raise AssertionError(f"{self.label} never reported it; its last lines:\n{tail}") from None
        return self.find(pred)[0]

    async def command(self, cmd: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    async def stop(self, graceful: dict[str, Any] | None = None) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            if graceful is not None:
                await self.command(graceful)
            else:
                self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 10)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)


def driver_command(
    driver: Path, opts: dict[str, Any], home: Path, **env: str
) -> tuple[list[str], dict[str, str]]:
    """argv and env of `node <driver> <opts as JSON>`, HOME at `home` (its ~/.sym state), no inherited
    state dir."""
    environ = {**os.environ, "HOME": str(home), **env}
    environ.pop("SYM_STATE_DIR", None)
    return [shutil.which("node") or "node", str(driver), json.dumps(opts)], environ
