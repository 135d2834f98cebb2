#!/usr/bin/env bash
# Makes sure what the test suite talks to is present on this machine:
#  - Debian's chromium (headless browser tests), installed once;
#  - a PostgreSQL server on 127.0.0.1:5432 (multi-instance campaign tests), started if stopped.
# Idempotent; safe to run on every `make test`.
set -uo pipefail

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: chromium could not be installed; browser tests will fail"
  else
    echo "warning: chromium missing and cannot be installed here; browser tests will fail"
  fi
fi

if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
exit 0
