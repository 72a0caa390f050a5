#!/usr/bin/env bash
# Install Debian's PostgreSQL server when it is missing (the catalog tests start their own
# throw-away cluster on 127.0.0.1; nothing here starts a system service).
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; then
  exit 0
fi
echo "installing PostgreSQL (Debian package postgresql)..."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# the package may start a cluster of its own: the tests do not use it
$SUDO service postgresql stop >/dev/null 2>&1 || true
