#!/usr/bin/env bash
# Builds the Python client wheel (clients/python) into a directory:
#
#   scripts/build-python-client.sh OUTDIR
#
# Offline: pip wheel --no-build-isolation with the tools venv's setuptools
# and grpcio-tools (scripts/requirements-tools.txt; $PYTHON overrides the
# interpreter). The stubs are generated from proto/ during the build, in a
# scratch copy of clients/python, so the source tree stays clean. Checks the
# wheel holds the stubs and py.typed; prints the wheel's path on stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=python-client
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

OUT=${1:?usage: build-python-client.sh OUTDIR}
PY=${PYTHON:-$ROOT/.tools/venv/bin/python}
[[ -x $PY ]] || die "$PY not found: run scripts/dev-env.sh (or set PYTHON)"
mkdir -p "$OUT"
rm -f "$OUT"/bi_data_client-*.whl
OUT=$(cd "$OUT" && pwd)

SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
cp -r "$ROOT/clients/python/pyproject.toml" "$ROOT/clients/python/setup.py" "$ROOT/clients/python/README.md" \
    "$ROOT/clients/python/src" "$SRC/"
find "$SRC" -name __pycache__ -prune -exec rm -rf {} +
BI_DATA_PROTO_DIR=$ROOT/proto "$PY" -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$OUT" "$SRC" >&2

"$PY" - "$OUT" <<'PY'
import glob, sys, zipfile
wheels = sorted(glob.glob(f"{sys.argv[1]}/bi_data_client-*.whl"))
if not wheels:
    sys.exit("no bi_data_client wheel built")
names = set(zipfile.ZipFile(wheels[-1]).namelist())
want = {"bi_data_client/py.typed", "bi_data_client/__init__.py", "bi/data/v1/__init__.py",
        "bi/data/v1/job_pb2.py", "bi/data/v1/job_pb2.pyi", "bi/data/v1/job_pb2_grpc.py"}
missing = sorted(want - names)
if missing:
    sys.exit(f"{wheels[-1]} lacks {missing}")
print(wheels[-1])
PY
