#!/usr/bin/env bash
# bench/run.sh — 'make bench' entry point (placeholder).
set -euo pipefail
echo "benchmarks: not yet implemented (issue 4)"
