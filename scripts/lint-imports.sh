#!/usr/bin/env bash
# The import-linter contracts of pyproject.toml ([tool.importlinter]), on a copy of the code
# laid out as installed. import-linter reads packages from the file system, and the
# editable install maps ingest/, processors/, query_api/ and schemas/ into runstream.*
# through an import hook it cannot see; the copy has runstream/schemas/... and benchmarks/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/.venv/bin}
layout=$(mktemp -d)
trap 'rm -rf "$layout"' EXIT
cp -r runstream benchmarks "$layout/"
for folder in schemas ingest processors query_api; do cp -r "$folder" "$layout/runstream/$folder"; done
(cd "$layout" && PYTHONPATH="$layout" "$BIN/lint-imports" "$OLDPWD/pyproject.toml")
