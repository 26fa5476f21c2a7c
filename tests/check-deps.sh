#!/bin/bash
# Fail early, with the fix named, when a test dependency is missing.
missing=()
for c in cc smtp-sink smtp-source swaks python3; do
  command -v "$c" >/dev/null || missing+=("$c")
done
[ -f /usr/include/cmocka.h ] || missing+=("cmocka.h")
[ -f /usr/include/unbound.h ] || missing+=("unbound.h")
command -v unbound >/dev/null || [ -x /usr/sbin/unbound ] || missing+=("unbound")
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]} -- run 'make deps' (or tools/install-deps.sh) first" >&2
  exit 1
fi
