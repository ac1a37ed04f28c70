#!/usr/bin/env bash
# Creates .venv with Python 3.11 and installs the pinned requirements and this project (editable).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# uv resolves and installs the ~300 packages of Airflow + dbt + GX in seconds instead of minutes.
.venv/bin/python -m pip install -q --disable-pip-version-check uv==0.13.9
.venv/bin/uv pip install -q --python .venv/bin/python -r requirements.txt -e .
