#!/usr/bin/env bash
# Formats the Swift sources and tests with the toolchain's swift-format and the project's
# .swift-format (120 columns, one statement per line, sorted imports). Long string literals stay
# as they are; scripts/check-architecture.sh keeps their count from growing.
set -euo pipefail
cd "$(dirname "$0")/.."
exec swift-format format --configuration .swift-format --in-place --recursive --parallel Sources Tests
