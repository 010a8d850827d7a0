#!/usr/bin/env bash
# Install the hub into .venv and run it in the foreground on SQLite (127.0.0.1:6969).
# Extra arguments go to `manage.py up` (see `scripts/up.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
exec .venv/bin/python manage.py up "$@"
