#!/usr/bin/env bash
# Installs the package built by build-deb.sh on this machine and checks it
# as an admin would: the unit verifies, the man page and bash completion are
# found, the installed config checks, the system user exists; then purges it
# and checks that nothing is left. Needs root (it runs dpkg).
# Usage: packaging/test-deb.sh [target/debian/tocsin_….deb]
set -euo pipefail
cd "$(dirname "$0")/.."
deb="${1:-$(ls -t target/debian/tocsin_*.deb | head -1)}"
fail() { echo "test-deb: $*" >&2; exit 1; }
dpkg -s tocsin >/dev/null 2>&1 && fail "a tocsin package is installed already; remove it first"
dpkg -i "$deb" >/dev/null || { apt-get install -f -y -qq >/dev/null; dpkg -i "$deb" >/dev/null; }
trap 'dpkg --purge tocsin >/dev/null 2>&1 || true' EXIT
[ -x /usr/bin/tocsin ] || fail "no /usr/bin/tocsin"
getent passwd tocsin >/dev/null || fail "no tocsin user"
systemd-analyze verify /usr/lib/systemd/system/tocsin.service 2>&1 | tee /tmp/tocsin-verify.log
[ -s /tmp/tocsin-verify.log ] && fail "systemd-analyze verify warns about the unit"
man -w tocsin >/dev/null || fail "man -w tocsin finds no page"
man -w tocsin-check >/dev/null || fail "man -w tocsin-check finds no page"
# The bash completion, loaded the way bash-completion loads it.
words=$(bash -c 'source /usr/share/bash-completion/completions/tocsin; COMP_WORDS=(tocsin ba); COMP_CWORD=1; _tocsin tocsin ba tocsin; echo "${COMPREPLY[@]}"')
[ "$words" = backup ] || fail "bash completes 'tocsin ba' as '$words'"
tocsin check -c /etc/tocsin/tocsin.yaml || fail "tocsin check of the installed config"
[ "$(stat -c %U:%G /etc/tocsin/tocsin.yaml)" = root:tocsin ] || fail "config not root:tocsin"
grep -q '^User=tocsin$' /usr/lib/systemd/system/tocsin.service || fail "the unit does not run as tocsin"
grep -q '^ConfigurationDirectoryMode=0750$' /usr/lib/systemd/system/tocsin.service || fail "the config folder is not kept to its group"
dpkg -L tocsin | grep -q '^/etc/logrotate.d/tocsin$' || fail "no logrotate config"
grep -q '/etc/tocsin/tocsin.yaml' /var/lib/dpkg/info/tocsin.conffiles || fail "config is not a conffile"
dpkg --purge tocsin >/dev/null
trap - EXIT
[ ! -e /usr/bin/tocsin ] || fail "/usr/bin/tocsin left after purge"
[ ! -e /etc/tocsin ] || fail "/etc/tocsin left after purge"
getent passwd tocsin >/dev/null && fail "tocsin user left after purge"
echo "test-deb: $deb installs, checks and purges cleanly"
