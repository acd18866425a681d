#!/usr/bin/env bash
# Builds the Node.js peers the interop tests run beside ours, from their public repositories, into a
# folder OUTSIDE this repository, and prints the variables to export. Nothing is copied into the repo.
#
#   tests/interop/build_nodes.sh [DIR]        (default DIR: ../interop-nodes beside this repository)
#
# DIR/sym        stock sym 0.12.1 (tag v0.12.1)                               -> SYM_NODE_DIR
# DIR/sym-v2     the same with lib/emit-policy.js MMP_EMIT_V2 = true          -> SYM_NODE_V2_DIR
# DIR/o/sym      sym 0.5.8 (commit 805de4d) on tests/interop/sym_core_standin
# DIR/o/xmesh-agent  the original runtime, xmesh-agent v0.1.10, on DIR/o/sym  -> XMESH_ORIGINAL_DIR
#
# SYM_GIT_URL / XMESH_GIT_URL override where to clone from (a local mirror, say). Re-running reuses
# the clones and reinstalls. Needs git, node >= 18 and npm.
set -euo pipefail

SYM_GIT_URL=${SYM_GIT_URL:-https://github.com/sym-bot/sym}
XMESH_GIT_URL=${XMESH_GIT_URL:-https://github.com/sym-bot/xmesh-agent}
SYM_STOCK_REF=v0.12.1
SYM_05_REF=805de4d
XMESH_REF=v0.1.10

die() { echo "build_nodes.sh: $*" >&2; exit 1; }
for tool in git node npm; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' || die "node >= 18 is required"

REPO=$(cd "$(dirname "$0")/../.." && pwd -P)
STANDIN="$REPO/tests/interop/sym_core_standin"
[ -f "$STANDIN/package.json" ] || die "no $STANDIN: run this script from an xmesh-agent checkout"
DIR=$(realpath -m "${1:-$REPO/../interop-nodes}")
case "$DIR/" in "$REPO"/*) die "$DIR is inside the repository; pick a folder outside it" ;; esac
mkdir -p "$DIR"

# checkout SOURCE DEST REF: clone SOURCE into DEST once, then force DEST to REF (undoing local edits)
checkout() {
  [ -d "$2/.git" ] || git -c advice.detachedHead=false clone -q "$1" "$2"
  git -C "$2" fetch -q --tags origin 2>/dev/null || true
  git -C "$2" -c advice.detachedHead=false checkout -q --force "$3"
  git -C "$2" clean -qfdx -e node_modules
}

echo "stock sym $SYM_STOCK_REF -> $DIR/sym"
checkout "$SYM_GIT_URL" "$DIR/sym" "$SYM_STOCK_REF"
(cd "$DIR/sym" && npm install --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error)

echo "stock sym $SYM_STOCK_REF, v2.0 emitter on -> $DIR/sym-v2"
checkout "$DIR/sym" "$DIR/sym-v2" "$SYM_STOCK_REF"
sed -i.orig 's/^const MMP_EMIT_V2 = false;$/const MMP_EMIT_V2 = true;/' "$DIR/sym-v2/lib/emit-policy.js"
rm -f "$DIR/sym-v2/lib/emit-policy.js.orig"
grep -q '^const MMP_EMIT_V2 = true;$' "$DIR/sym-v2/lib/emit-policy.js" || die "could not switch MMP_EMIT_V2 on"
(cd "$DIR/sym-v2" && npm install --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error)

echo "sym 0.5.8 ($SYM_05_REF) on the test stand-in core -> $DIR/o/sym"
mkdir -p "$DIR/o"
checkout "$DIR/sym" "$DIR/o/sym" "$SYM_05_REF"
(cd "$DIR/o/sym" && npm pkg set "dependencies.@sym-bot/core=file:$STANDIN" && rm -f package-lock.json \
  && npm install --install-links --no-audit --no-fund --loglevel=error)

echo "original xmesh-agent $XMESH_REF on sym 0.5.8 -> $DIR/o/xmesh-agent"
checkout "$XMESH_GIT_URL" "$DIR/o/xmesh-agent" "$XMESH_REF"
(cd "$DIR/o/xmesh-agent" && npm pkg set "dependencies.@sym-bot/sym=file:../sym" && rm -f package-lock.json \
  && npm install --no-audit --no-fund --loglevel=error)
got=$(node -p "require('$DIR/o/xmesh-agent/node_modules/@sym-bot/sym/package.json').version")
case "$got" in 0.5.*) ;; *) die "the original runtime resolved sym $got, not 0.5.x" ;; esac

cat <<EOF

Built. Export these, then run the interop tests from $REPO:
export SYM_NODE_DIR=$DIR/sym
export SYM_NODE_V2_DIR=$DIR/sym-v2
export XMESH_ORIGINAL_DIR=$DIR/o/xmesh-agent
.venv/bin/pytest tests/interop tests/unit/test_interop_*.py -q -rs
EOF
