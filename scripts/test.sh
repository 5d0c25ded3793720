#!/usr/bin/env bash
# Installs what is missing, then runs every check: lint and format, type-check and build (install.sh),
# the type-check of the tests and of bench/, and all tests (which smoke-run each bench once).
# Pass path fragments to run only matching test files: ./scripts/test.sh packages/server/test/api
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
echo "hangar-test: lint and format (biome)"
npx biome check .
echo "hangar-test: type-check the tests (the build covers the sources)"
npx tsc -p tsconfig.tests.json
echo "hangar-test: type-check the benches (JavaScript, checked against the built server's types)"
npx tsc -p bench/tsconfig.json
echo "hangar-test: tests"
node scripts/run-tests.mjs "$@"
