"""What we mint validates against the spec's JSON Schemas (§20), $refs resolved through a registry."""

from __future__ import annotations

import json
import uuid

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from tests.mmp_data import mmp_path
from xmesh_agent.identity import NodeIdentity, uuid7
from xmesh_agent.mmp.cmb import mint

SCHEMAS = mmp_path("schema")
BASE = "https://meshcognition.org/spec/mmp/schema/"


def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        schema = json.loads(path.read_text())
        resource = Resource.from_contents(schema)
        resources.append((schema["$id"], resource))
        resources.append((BASE + path.name, resource))
    return Registry().with_resources(resources)


REGISTRY = _registry()


def _validator(name: str) -> Draft202012Validator:
    schema = REGISTRY.contents(BASE + name)
    return Draft202012Validator(schema, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _errors(name: str, instance: object) -> list[str]:
    return [e.message for e in _validator(name).iter_errors(instance)]


@pytest.fixture(scope="module")
def alice() -> NodeIdentity:
    return NodeIdentity.generate("alice")


@pytest.mark.parametrize("name", sorted(p.name for p in SCHEMAS.glob("*.schema.json")))
def test_schemas_are_valid_2020_12(name: str) -> None:
    Draft202012Validator.check_schema(REGISTRY.contents(BASE + name))


def test_minted_root_cmb_validates(alice: NodeIdentity) -> None:
    cmb = mint(
        {"focus": "relay server", "intent": "route frames"},
        identity=alice,
        group="team-a",
        created_at=1751000000000,
        mood=(0.2, -0.1),
    )
    wire = cmb.to_wire()
    assert _errors("cmb.schema.json", wire) == []
    assert set(wire["fields"]) == {
        "focus",
        "issue",
        "intent",
        "motivation",
        "commitment",
        "perspective",
        "mood",
    }


def test_minted_remix_and_directed_cmb_validate(alice: NodeIdentity) -> None:
    root = mint({"focus": "a"}, identity=alice, group="g", created_at=1)
    remix = mint({"focus": "b"}, identity=alice, group="g", created_at=2, parents=[root], to=uuid7())
    wire = remix.to_wire()
    assert wire["lineage"]["parents"] == [root.key]
    assert _errors("cmb.schema.json", wire) == []
    frame = {"type": "cmb", "timestamp": 2, "to": remix.to, "cmb": wire}
    assert _errors("cmb-frame.schema.json", frame) == []


def test_cmb_frame_validates(alice: NodeIdentity) -> None:
    cmb = mint({"focus": "x"}, identity=alice, group="default", created_at=5)
    assert _errors("cmb-frame.schema.json", {"type": "cmb", "cmb": cmb.to_wire()}) == []


def test_cmb_frame_rejects_what_we_must_not_send(alice: NodeIdentity) -> None:
    wire = mint({"focus": "x"}, identity=alice, group="default", created_at=5).to_wire()
    del wire["fields"]["mood"]
    assert _errors("cmb-frame.schema.json", {"type": "cmb", "cmb": wire})
    assert _errors("cmb-frame.schema.json", {"type": "cmb"})
    bad_alg = {**mint({"focus": "x"}, identity=alice, group="g", created_at=5).to_wire(), "sigAlg": "rsa"}
    assert _errors("cmb.schema.json", bad_alg)


def _handshake(identity: NodeIdentity) -> dict:
    return {
        "type": "handshake",
        "nodeId": identity.node_id,
        "name": identity.name,
        "publicKey": identity.public_key_b64url,
        "version": "1.1.0",
        "extensions": [],
        "lifecycleRole": "participant",
        "group": "default",
    }


def test_handshake_shape_validates(alice: NodeIdentity) -> None:
    hs = _handshake(alice)
    assert uuid.UUID(hs["nodeId"]).version == 7
    assert _errors("handshake.schema.json", hs) == []


@pytest.mark.parametrize(
    "change",
    [
        {"nodeId": "not-a-uuid"},
        {"version": "1.1"},
        {"name": ""},
        {"lifecycleRole": "king"},
        {"type": "hello"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_handshake_schema_catches_bad_fields(alice: NodeIdentity, change: dict) -> None:
    assert _errors("handshake.schema.json", {**_handshake(alice), **change})


def test_cmb_fetch_pair_validates(alice: NodeIdentity) -> None:
    cmb = mint({"focus": "x"}, identity=alice, group="g", created_at=5)
    assert _errors("cmb-fetch.schema.json", {"type": "cmb-fetch", "reqId": "r1", "key": cmb.key}) == []
    found = {"type": "cmb-fetch-result", "reqId": "r1", "key": cmb.key, "found": True, "cmb": cmb.to_wire()}
    assert _errors("cmb-fetch-result.schema.json", found) == []
    missing = {"type": "cmb-fetch-result", "reqId": "r1", "key": cmb.key, "found": False, "cmb": None}
    assert _errors("cmb-fetch-result.schema.json", missing) == []
