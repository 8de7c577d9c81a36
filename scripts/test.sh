#!/usr/bin/env bash
# The whole test suite: brings up the servers it needs, then runs every test
# with the race detector. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
exec go test -race -count=1 -timeout 25m ./... "$@"
