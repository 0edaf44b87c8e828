"""Schema evolution: a field may be added within a schema_version; removing, retyping or making a
field optional needs a new schema_version (and a new baseline in tests/schema_baseline/vN)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from cdc.mapping.events import SCHEMA_VERSION, json_schemas

BASELINES = Path(__file__).resolve().parents[1] / "schema_baseline"


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[1]]
    return node


def _types(node: dict[str, Any], defs: dict[str, Any]) -> frozenset[str]:
    if "anyOf" in node:
        return frozenset().union(*(_types(_resolve(n, defs), defs) for n in node["anyOf"]))
    node = _resolve(node, defs)
    t = node.get("type")
    if t is None:
        return frozenset({"any"})
    return frozenset(t if isinstance(t, list) else [t])


def incompatibilities(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    old_defs, new_defs = old.get("$defs", {}), new.get("$defs", {})
    problems: list[str] = []

    def walk(o: dict[str, Any], n: dict[str, Any], path: str, depth: int) -> None:
        if depth > 20:
            return
        if _types(o, old_defs) != _types(n, new_defs):
            problems.append(f"{path or '(root)'}: type {sorted(_types(o, old_defs))} -> {sorted(_types(n, new_defs))}")
            return
        o, n = _resolve(o, old_defs), _resolve(n, new_defs)
        if "const" in o and o.get("const") != n.get("const"):
            problems.append(f"{path}: constant {o['const']!r} -> {n.get('const')!r}")
        for name in o.get("required", []):
            if name not in n.get("required", []):
                problems.append(f"{path}.{name}: no longer required")
        for name, sub in o.get("properties", {}).items():
            if name not in n.get("properties", {}):
                problems.append(f"{path}.{name}: removed")
            else:
                walk(sub, n["properties"][name], f"{path}.{name}", depth + 1)

    walk(old, new, "", 0)
    return problems


def test_current_schemas_are_compatible_with_this_versions_baseline() -> None:
    baseline = BASELINES / f"v{SCHEMA_VERSION}"
    assert baseline.is_dir(), (
        f"schema_version is {SCHEMA_VERSION} but tests/schema_baseline/v{SCHEMA_VERSION} is missing: "
        "copy schemas/*.json there when you bump the version"
    )
    current = json_schemas()
    for path in sorted(baseline.glob("*.json")):
        assert path.name in current, f"{path.name} was removed without a schema_version bump"
        problems = incompatibilities(json.loads(path.read_text()), current[path.name])
        assert not problems, f"{path.name} changed incompatibly without a schema_version bump: {problems}"


def test_the_checker_catches_removal_retyping_and_optionality() -> None:
    base = json_schemas()["post_meta_added.json"]
    assert incompatibilities(base, base) == []

    added = copy.deepcopy(base)
    added["$defs"]["MetaData"]["properties"]["extra"] = {"type": "string"}
    assert incompatibilities(base, added) == []

    removed = copy.deepcopy(base)
    del removed["$defs"]["MetaData"]["properties"]["meta_key"]
    removed["$defs"]["MetaData"]["required"].remove("meta_key")
    assert any("meta_key: removed" in p for p in incompatibilities(base, removed))

    retyped = copy.deepcopy(base)
    retyped["$defs"]["MetaData"]["properties"]["meta_id"] = {"type": "string"}
    assert any("meta_id: type" in p for p in incompatibilities(base, retyped))

    optional = copy.deepcopy(base)
    optional["required"].remove("post_type")
    assert any("post_type: no longer required" in p for p in incompatibilities(base, optional))

    version = copy.deepcopy(base)
    version["properties"]["schema_version"]["const"] = SCHEMA_VERSION + 1
    assert any("schema_version: constant" in p for p in incompatibilities(base, version))
