#!/usr/bin/env bash
# System packages runstream's development stack needs that pip cannot provide, for Debian 12:
#   - PostgreSQL server binaries (initdb, pg_ctl): package `postgresql`
#   - Java 17 and Maven, to resolve and run Apache Kafka 3.9.1 (runstream/devstack/)
#   - Chromium, for the web UI's browser tests (Playwright drives /usr/bin/chromium; it never
#     downloads a browser of its own), with a font so pages render text
#   - Node.js and npm, to build the web UI (ui/) when the machine has none (Debian's are enough:
#     the build uses esbuild and TypeScript only)
# Idempotent and a fast no-op when everything is present. Run as root (or with sudo available).
set -euo pipefail

have_pg() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; }

missing=()
have_pg || missing+=(postgresql)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v chromium >/dev/null || missing+=(chromium)
command -v npm >/dev/null || missing+=(nodejs npm)
compgen -G "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf" >/dev/null || missing+=(fonts-dejavu-core)

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-system-deps: postgresql, java, mvn and chromium already present"
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-system-deps: need root to install: ${missing[*]}" >&2; exit 1; }
    SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive

# runstream starts its own clusters; don't let the package create and start a "main"
# cluster on port 5432 (same switch as the official postgres Docker image uses).
"${SUDO[@]}" mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | "${SUDO[@]}" tee /etc/postgresql-common/createcluster.d/00-runstream.conf >/dev/null

install() { "${SUDO[@]}" apt-get install -y --no-install-recommends "$@"; }

# apt-get update only when the package lists are absent or do not know the packages.
if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null || ! install "${missing[@]}"; then
    "${SUDO[@]}" apt-get update
    install "${missing[@]}"
fi

have_pg && command -v java >/dev/null && command -v mvn >/dev/null && command -v chromium >/dev/null
echo "install-system-deps: installed ${missing[*]}"
