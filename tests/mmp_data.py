"""Where the protocol's normative vectors, schemas and stock-node captures live.

They are the specification's data, kept beside this checkout in ../shared/mmp (or wherever
XMESH_MMP_DATA points); tests that need them skip with a clear reason when they are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MMP_DATA = Path(
    os.environ.get("XMESH_MMP_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "mmp"
)


def mmp_path(*parts: str) -> Path:
    path = MMP_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"MMP data not found at {path} (set XMESH_MMP_DATA)", allow_module_level=True)
    return path
