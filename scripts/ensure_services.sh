#!/usr/bin/env bash
# The OS packages the tests run for real: PostgreSQL (metadata DB) and Redis (Celery broker)
# for the distributed-Airflow tests, Chromium for the browser tests. Installed with apt-get
# when missing; nothing is started here (the tests start private instances and stop them by PID).
set -euo pipefail
missing=()
command -v redis-server > /dev/null || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1 || missing+=(postgresql)
command -v chromium > /dev/null || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] && ! command -v sudo > /dev/null; then
  echo "missing OS packages: ${missing[*]} (install them, or run the set-up as root)" >&2
  exit 1
fi
SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
echo ">> installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends "${missing[@]}" > /dev/null 2>&1 \
  || { $SUDO apt-get update > /dev/null && $SUDO apt-get install -y --no-install-recommends "${missing[@]}" > /dev/null; }
