#!/usr/bin/env bash
# System packages runstream's development stack needs that pip cannot provide, for Debian 12:
#   - PostgreSQL server binaries (initdb, pg_ctl): package `postgresql`
#   - Java 17 and Maven, to resolve and run Apache Kafka 3.9.1 (runstream/devstack/)
# Idempotent and a fast no-op when everything is present. Run as root (or with sudo available).
set -euo pipefail

have_pg() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; }

missing=()
have_pg || missing+=(postgresql)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-system-deps: postgresql, java and mvn already present"
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

have_pg && command -v java >/dev/null && command -v mvn >/dev/null
echo "install-system-deps: installed ${missing[*]}"
