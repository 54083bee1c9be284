#!/usr/bin/env bash
# Builds (or reuses from the cache) the guest kernel and image: the same as `npm run guest`.
set -euo pipefail
cd "$(dirname "$0")/../.."
npm run --silent build
exec node dist/cove.cjs guest build "$@"
