"""keygen / fingerprint / trust through the real CLI (typer's CliRunner), on the per-test home."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from xmesh_agent import paths
from xmesh_agent.cli.app import app
from xmesh_agent.identity import b64url_encode, fingerprint, key_paths, load_identity
from xmesh_agent.mmp import trust

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_keygen_writes_a_0600_key_and_shows_its_prints():
    result = invoke("keygen", "rev-01")
    assert result.exit_code == 0, result.output
    key_file, _ = key_paths("rev-01")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    identity = load_identity("rev-01")
    assert identity is not None
    assert f"keyprint:    {identity.keyprint}" in result.output
    assert f"fingerprint: {fingerprint(identity.public_key)}" in result.output
    assert identity.public_key_b64url in result.output
    assert re.search(r"keyprint:\s+[0-9a-f]{16}\n", result.output)


def test_keygen_refuses_to_overwrite_without_force_and_names_the_existing_key():
    assert invoke("keygen", "rev-02").exit_code == 0
    first = load_identity("rev-02")
    again = invoke("keygen", "rev-02")
    assert again.exit_code == 1
    assert first.keyprint in again.output and "--force" in again.output
    assert load_identity("rev-02").public_key == first.public_key
    forced = invoke("keygen", "rev-02", "--force")
    assert forced.exit_code == 0
    assert load_identity("rev-02").public_key != first.public_key


def test_keygen_rejects_a_bad_name_as_usage_error():
    result = invoke("keygen", "../escape")
    assert result.exit_code == 2
    assert not paths.keys_dir().exists() or not list(paths.keys_dir().iterdir())


def test_fingerprint_shows_prints_or_says_there_is_no_key():
    assert invoke("keygen", "fp-01").exit_code == 0
    identity = load_identity("fp-01")
    shown = invoke("fingerprint", "fp-01")
    assert shown.exit_code == 0
    assert identity.keyprint in shown.output
    assert fingerprint(identity.public_key) in shown.output
    assert identity.public_key_b64url in shown.output
    missing = invoke("fingerprint", "nobody")
    assert missing.exit_code == 1 and "no key for nobody" in missing.output


def test_trust_add_list_remove_round_trip():
    assert invoke("keygen", "w-01").exit_code == 0
    pub = load_identity("w-01").public_key_b64url
    added = invoke("trust", "add", "--group", "team", "--peer", "w-01", "--public-key", pub)
    assert added.exit_code == 0, added.output
    assert load_identity("w-01").keyprint in added.output
    assert trust.list("team") == {"w-01": pub}

    listed = invoke("trust", "list", "--group", "team", "--json")
    assert listed.exit_code == 0
    rows = json.loads(listed.output)
    assert rows == [{"peer": "w-01", "keyprint": load_identity("w-01").keyprint, "public_key": pub}]
    text = invoke("trust", "list", "--group", "team")
    assert "w-01" in text.output and load_identity("w-01").keyprint in text.output

    assert invoke("trust", "remove", "--group", "team", "--peer", "w-01").exit_code == 0
    assert trust.list("team") == {}
    assert "no trusted keys" in invoke("trust", "list", "--group", "team").output
    again = invoke("trust", "remove", "--group", "team", "--peer", "w-01")
    assert again.exit_code == 1 and "not pinned" in again.output


def test_trust_add_refuses_keys_that_are_not_32_bytes():
    short = b64url_encode(b"\x01" * 31)
    for bad in (short, "not base64 at all!!", b64url_encode(b"\x02" * 33)):
        result = invoke("trust", "add", "--group", "team", "--peer", "x-01", "--public-key", bad)
        assert result.exit_code == 2, (bad, result.output)
    assert trust.list("team") == {}


def test_trust_usage_errors_exit_2():
    assert invoke("trust", "list").exit_code == 2  # --group missing
    assert invoke("trust", "list", "--group", "Bad Group").exit_code == 2
    assert invoke("trust", "bogus").exit_code == 2


BAD_NAMES = ["rev-01\n", "rev-01\r\n", " rev-01", "rev-01 ", "rev\t01", "rev-01\x00", "rev-01\u2028"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_keygen_refuses_control_characters_and_surrounding_whitespace(name: str):
    # issue 22: a `$` pattern matched before a trailing newline, so "rev-01\n" got a key file
    result = invoke("keygen", name)
    assert result.exit_code == 2, result.output
    assert "invalid peer name" in result.output and len(result.output.strip().splitlines()) == 1
    assert not paths.keys_dir().exists() or list(paths.keys_dir().iterdir()) == []


def test_keygen_refuses_a_trailing_newline_in_a_real_process():
    done = subprocess.run(
        [sys.executable, "-m", "xmesh_agent.cli.app", "keygen", "rev-01\n"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "invalid peer name 'rev-01\\n'" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not paths.keys_dir().exists() or list(paths.keys_dir().iterdir()) == []


@pytest.mark.parametrize("name", ["w-01\n", " w-01"])
def test_trust_add_refuses_the_same_names(name: str):
    pub = b64url_encode(bytes(32))
    result = invoke("trust", "add", "--group", "team", "--peer", name, "--public-key", pub)
    assert result.exit_code != 0 and "invalid peer name" in result.output
    assert invoke("trust", "list", "--group", "team", "--json").output.strip() in ("[]", "")
