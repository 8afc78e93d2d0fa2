#!/usr/bin/env bash
# Every dependency of every workspace member comes from the root Cargo.toml's
# [workspace.dependencies] (`name.workspace = true`, or `{ workspace = true,
# features = [...], optional = true }`): one place for each version. cargo deny
# catches a dependency declared both ways by two members; this also catches one
# that a single member declares with its own version or path.
#
#   scripts/check-workspace-deps.sh      # exit 1 and the offending lines if any
set -euo pipefail
cd "$(dirname "$0")/.."

check=$(cat <<'PY'
import json
import sys
import tomllib

meta = json.load(sys.stdin)
members = [p for p in meta["packages"] if p["id"] in set(meta["workspace_members"])]
bad = []
for pkg in sorted(members, key=lambda p: p["name"]):
    with open(pkg["manifest_path"], "rb") as f:
        manifest = tomllib.load(f)
    tables = [("", manifest)]
    tables += [(f"target.{t}.", v) for t, v in manifest.get("target", {}).items()]
    for prefix, table in tables:
        for kind in ("dependencies", "dev-dependencies", "build-dependencies"):
            for name, spec in table.get(kind, {}).items():
                if not (isinstance(spec, dict) and spec.get("workspace") is True):
                    bad.append(f"{pkg['name']}: [{prefix}{kind}] {name} = {spec!r}")
if bad:
    print("check-workspace-deps: declare these in [workspace.dependencies] and use `workspace = true`:", file=sys.stderr)
    for line in bad:
        print(f"  {line}", file=sys.stderr)
    sys.exit(1)
print(f"check-workspace-deps: every dependency of {len(members)} members comes from [workspace.dependencies]")
PY
)
cargo metadata --format-version 1 --locked --no-deps | python3 -c "$check"
