#!/usr/bin/env bash
# The whole suite (`npm test`): unit and integration tests on real components.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash test/setup/with-components.sh node --test --test-concurrency=1 'test/unit/**/*.test.ts' 'test/integration/**/*.test.ts'
