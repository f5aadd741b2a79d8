#!/usr/bin/env bash
# The static checks CI runs before the tests (configured in pyproject.toml):
#   ruff     pyflakes, pycodestyle, isort, pyupgrade, unused noqa
#   vulture  unused code outside tests (scripts/vulture_whitelist.py: what is used from outside)
#   lint-imports  the import-linter contracts, on a copy of the code laid out as installed
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/.venv/bin}
"$BIN/ruff" check .
"$BIN/vulture"
# import-linter reads packages from the file system, and the editable install maps
# ingest/, processors/, query_api/ and schemas/ into runstream.* through an import hook
# it cannot see: give it a copy with the installed layout (runstream/schemas/..., benchmarks/).
layout=$(mktemp -d)
trap 'rm -rf "$layout"' EXIT
cp -r runstream benchmarks "$layout/"
for folder in schemas ingest processors query_api; do cp -r "$folder" "$layout/runstream/$folder"; done
(cd "$layout" && PYTHONPATH="$layout" "$BIN/lint-imports" --config "$OLDPWD/pyproject.toml")
