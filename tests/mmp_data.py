"""Where the protocol's normative vectors, schemas and stock-node captures live: in the repository.

`tests/data/mmp/` carries them (see its ATTRIBUTION), so every clone runs every conformance test;
a missing file is a broken checkout and fails the test, it never skips.
"""

from __future__ import annotations

from pathlib import Path

MMP_DATA = Path(__file__).resolve().parent / "data" / "mmp"


def mmp_path(*parts: str) -> Path:
    path = MMP_DATA.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"conformance data missing from the checkout: {path}")
    return path
