#!/usr/bin/env bash
# Debian packages some tests need: a real PostgreSQL server (search storage) and strace (no network
# calls from offline runs). Installed when missing and we may (root with apt); otherwise those tests
# say why they skip, except under CI (NAS_CI=1), where they fail.
set -uo pipefail
need=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null || need+=(postgresql)
command -v strace >/dev/null || need+=(strace)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: ${need[*]} not installed (needs root and apt-get); the tests that use them will be skipped." >&2
  exit 0
fi
echo "Installing ${need[*]} (Debian) for the tests ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian package starts a cluster of its own; the tests start theirs, so stop it.
command -v service >/dev/null && service postgresql stop >/dev/null 2>&1 || true
