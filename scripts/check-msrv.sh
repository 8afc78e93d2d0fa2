#!/usr/bin/env bash
# The workspace's rust-version must be at least the highest rust-version any
# locked dependency declares (Cargo.lock as committed, every platform's
# dependencies included): a lower one promises a compiler that cannot build
# the lock file.
#
# Only one toolchain is installed on the project's machines, so the MSRV is
# derived from the dependencies' own declarations, not compile-tested with an
# older compiler.
#
#   scripts/check-msrv.sh          # prints the derived MSRV and which crates set it
#
# Exits 1 when a workspace member declares no rust-version or a lower one.
set -euo pipefail
cd "$(dirname "$0")/.."

check=$(cat <<'PY'
import json
import sys

def key(version):
    # "1.89" and "1.89.0" are the same requirement.
    parts = [int(p) for p in version.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

meta = json.load(sys.stdin)
members = set(meta["workspace_members"])
deps = [p for p in meta["packages"] if p["id"] not in members and p.get("rust_version")]
if not deps:
    sys.exit("check-msrv: no locked dependency declares a rust-version")
need = max(key(p["rust_version"]) for p in deps)
setters = sorted(f"{p['name']} {p['version']}" for p in deps if key(p["rust_version"]) == need)
need_text = ".".join(map(str, need[:2] if need[2] == 0 else need))
print(f"derived MSRV {need_text}, from: {', '.join(setters)}")

bad = []
for p in sorted((p for p in meta["packages"] if p["id"] in members), key=lambda p: p["name"]):
    declared = p.get("rust_version")
    if declared is None:
        bad.append(f"{p['name']}: no rust-version (needs {need_text})")
    elif key(declared) < need:
        bad.append(f"{p['name']}: rust-version {declared} < {need_text}")
    else:
        note = "" if key(declared) == need else f" (higher than the {need_text} the dependencies need)"
        print(f"{p['name']}: rust-version {declared}{note}")
if bad:
    print("check-msrv: the workspace promises an older compiler than its dependencies need:", file=sys.stderr)
    for line in bad:
        print(f"  {line}", file=sys.stderr)
    print(f"set [workspace.package] rust-version = \"{need_text}\" in Cargo.toml", file=sys.stderr)
    sys.exit(1)
PY
)
cargo metadata --format-version 1 --locked | python3 -c "$check"
