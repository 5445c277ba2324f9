#!/usr/bin/env bash
# Regenerates requirements/lock.txt from setup.cfg. TFF 0.87 pins jaxlib==0.4.14, which the
# package index does not have; the override swaps in jaxlib 0.4.13, which works with jax 0.4.14.
set -euo pipefail
cd "$(dirname "$0")/.."
uv pip compile setup.cfg --extra test --override requirements/overrides.txt \
  --python-version 3.11 -o requirements/lock.txt
