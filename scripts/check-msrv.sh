#!/usr/bin/env bash
# Checks that each workspace crate's `rust-version` is true: no dependency it builds with
# (normal and build dependencies, every feature on) declares a newer `rust-version` than the
# crate itself. Only one toolchain is installed here, so instead of compiling with the old
# compiler this reads what the dependencies declare (`cargo metadata`); a dependency that
# declares nothing is not checked. Prints, per crate, the declared and the needed version.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo metadata --format-version 1 --all-features --locked | python3 -c '
import json, sys

meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}

def version(v):
    parts = [int(x) for x in (v or "0").split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

def runtime_deps(node_id):
    for dep in nodes[node_id]["deps"]:
        if any(k["kind"] in (None, "build") for k in dep["dep_kinds"]):
            yield dep["pkg"]

failed = False
for member in sorted(meta["workspace_members"], key=lambda i: packages[i]["name"]):
    pkg = packages[member]
    name = pkg["name"]
    declared = pkg.get("rust_version")
    seen, stack = set(), [member]
    while stack:
        for dep in runtime_deps(stack.pop()):
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    needs = max(
        ((version(packages[d].get("rust_version")), packages[d]["name"]) for d in seen),
        default=((0, 0, 0), "-"),
    )
    need_text = ".".join(map(str, needs[0]))
    if declared is None:
        print(f"{name}: no rust-version declared (dependencies need {need_text}, {needs[1]})")
        failed = True
    elif version(declared) < needs[0]:
        print(f"{name}: declares rust-version {declared}, but {needs[1]} needs {need_text}")
        failed = True
    else:
        print(f"{name}: rust-version {declared} ok (dependencies need {need_text}, {needs[1]})")
sys.exit(1 if failed else 0)
'
