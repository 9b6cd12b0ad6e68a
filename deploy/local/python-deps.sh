#!/usr/bin/env bash
# The readers and clients tests use to check offpeak from the outside: the official OpenAI and
# Anthropic Python clients (against the simulator) and pyarrow + duckdb (reading result files).
set -euo pipefail
PY=${PYTHON:-python3}
if ! "$PY" -c 'import openai, anthropic, pyarrow, duckdb' 2>/dev/null; then
  echo "[python] installing openai anthropic pyarrow duckdb" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check openai anthropic pyarrow duckdb
fi
