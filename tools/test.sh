#!/usr/bin/env bash
# Installs everything the tests need (pinned, into ./.venv and ./.servers) and runs the
# whole suite against real servers on loopback. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# systemd-analyze checks the units in deploy/ (Debian's systemd package; most machines
# have it)
command -v systemd-analyze >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd; }
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
.venv/bin/python tools/servers.py install
.venv/bin/ruff check pitreos tests tools
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
