#!/usr/bin/env bash
# Rehearse the GPU node on this machine: a fresh folder with what a device call brings (the
# working tree's tracked and untracked-but-not-ignored files, and the kit's parts and small
# files, hard-linked), then the device script in a clean environment: no PYTHONPATH, no
# virtual environment, a PATH whose python3 is another Python than the kit's (3.12 where
# pyenv has one, as on the GPU node), HOME in the folder.  Without a GPU the script runs its
# CPU dry run (GPU steps skipped, and said so).
#   bash bench/gpu_kit/simulate_device.sh [DIR] [-- run_on_gpu.sh options]
# DIR (default: a new folder under /tmp) is removed first when it exists.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KIT=$ROOT/.gpukit
DIR=${1:-$(mktemp -d /tmp/gpukit-device-XXXXXX)}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
[ -f "$KIT/manifest.json" ] || { echo "simulate_device.sh: no kit in $KIT: run bench/gpu_kit/build.py first" >&2; exit 2; }
rm -rf "$DIR" && mkdir -p "$DIR/repo/.gpukit"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$DIR/repo" 2>/dev/null || true)
for f in "$KIT"/part-* "$KIT"/SHA256SUMS "$KIT"/manifest.json "$KIT"/kitparts.py "$KIT"/gpu_bench.py "$KIT"/run_on_gpu.sh; do
  ln "$f" "$DIR/repo/.gpukit/" 2>/dev/null || cp "$f" "$DIR/repo/.gpukit/"
done
BOOT=/usr/bin
for v in 3.12.1 3.12; do [ -x "/root/.pyenv/versions/$v/bin/python3" ] && { BOOT=/root/.pyenv/versions/$v/bin; break; }; done
echo "simulate_device.sh: $DIR/repo ($(du -sh "$DIR/repo" | cut -f1)), bootstrap python3 from $BOOT"
cd "$DIR/repo"
exec env -i HOME="$DIR/home" PATH="$BOOT:/usr/local/bin:/usr/bin:/bin" LANG=C.UTF-8 OUT="$DIR/out" \
  bash .gpukit/run_on_gpu.sh "$@"
