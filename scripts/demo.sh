#!/usr/bin/env bash
# The main job, from a fresh clone: set everything up, create ./demo-library (an IBM TS3100
# style changer, 4 LTO-8 drives, 40 slots, 4 mailslots, 20 sample cartridges) and serve it
# over iSCSI on 127.0.0.1:3260 until Ctrl-C / SIGTERM.
#
#   ./scripts/demo.sh            serve the demo library
#   ./scripts/demo.sh backup     instead: back up a sample tree onto it (baseline, then an
#                                incremental after a change) and restore it elsewhere
#
# DEMO_ROOT and DEMO_PORTAL override the library directory and the portal.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
ROOT=${DEMO_ROOT:-$PWD/demo-library}
PORTAL=${DEMO_PORTAL:-127.0.0.1:3260}

if [ ! -e "$ROOT/library.toml" ]; then
  vtl --root "$ROOT" init --portal "$PORTAL"
  vtl --root "$ROOT" cartridge create E00001L8-E00020L8
  vtl --root "$ROOT" cartridge create W00001LY --worm
fi

case "${1:-serve}" in
  serve)
    vtl --root "$ROOT" status
    exec vtl --root "$ROOT" serve --portal "$PORTAL"
    ;;
  backup)
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/data"
    cp -a /usr/share/doc/. "$work/data/" 2>/dev/null || true
    ln -s README "$work/data/a-symlink"
    ebm --root "$ROOT" pool list | grep -q demo || {
      ebm --root "$ROOT" pool create demo
      ebm --root "$ROOT" pool add demo E00011L8 E00012L8 E00013L8
    }
    ebm --root "$ROOT" backup demo-docs --source "$work/data" --pool demo --verify
    echo "a change after the baseline" > "$work/data/NEW-FILE"
    rm -rf "$work/data/$(ls "$work/data" | head -1)"
    ebm --root "$ROOT" backup demo-docs --verify
    ebm --root "$ROOT" list
    ebm --root "$ROOT" restore demo-docs --to "$work/restored"
    diff -r --no-dereference "$work/data" "$work/restored" && echo "restore: identical to the source"
    ;;
  *)
    echo "usage: $0 [serve|backup]" >&2
    exit 2
    ;;
esac
