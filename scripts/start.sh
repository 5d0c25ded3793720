#!/usr/bin/env bash
# Installs what is missing, builds, and starts hangard in the foreground. Flags go to hangard:
#   ./scripts/start.sh --listen 0.0.0.0:4280 --data-dir /var/lib/hangar
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
exec node packages/server/dist/main.js "$@"
