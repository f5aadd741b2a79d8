#!/usr/bin/env bash
# The static checks CI runs before the tests (configured in pyproject.toml):
#   ruff     pyflakes, pycodestyle, isort, pyupgrade, unused noqa
#   vulture  unused code outside tests (scripts/vulture_whitelist.py: what is used from outside)
#   lint-imports  the import-linter contracts (scripts/lint-imports.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/.venv/bin}
"$BIN/ruff" check .
"$BIN/vulture"
bash scripts/lint-imports.sh
