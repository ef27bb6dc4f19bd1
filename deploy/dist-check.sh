#!/usr/bin/env bash
# Proves the wheel is self-contained: installs it into a fresh venv (its
# dependencies from the package index, pinned by constraints.txt), then, from
# a folder outside the checkout and with PATH reduced to the system folders,
# checks that `pravah --version` and the bundled engine report the same
# version and that `pravah run` completes a csv-header job. The CLI must find
# pravah-engine next to itself in the venv, not through PATH or target/.
# Usage: deploy/dist-check.sh dist/pravah-*.whl
set -euo pipefail

wheel=${1:?usage: deploy/dist-check.sh WHEEL}
[[ -f $wheel ]] || { echo "dist-check: no wheel at $wheel (run make dist)" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
wheel=$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")
work=$(mktemp -d "${TMPDIR:-/tmp}/pravah-dist-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q -c "$repo/constraints.txt" "$wheel"
python3 "$repo/scripts/make_sample.py" "$work/data" >/dev/null

cd "$work"
run() { env -i HOME="$work" PATH=/usr/bin:/bin PRAVAH_STATE_DIR="$work/state" "$@"; }
version=$(run "$work/venv/bin/pravah" --version)
engine_version=$(run "$work/venv/bin/pravah" tasks --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["engine_version"])')
echo "dist-check: $version, engine $engine_version"
[[ $version == "pravah $engine_version" ]] || { echo "dist-check: versions differ" >&2; exit 1; }
run "$work/venv/bin/pravah" run "$work/data" --task csv-header --json >"$work/run.json"
python3 - "$work/run.json" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))
assert job["status"] == "completed", job
print(f"dist-check: job {job['id']} completed")
PY
echo "dist-check: ok in $((SECONDS - start)) s"
