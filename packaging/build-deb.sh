#!/usr/bin/env bash
# Builds the Debian package: target/debian/tocsin_<version>_<arch>.deb.
# Usage: packaging/build-deb.sh [--profile release|dev]
#   release (the default): the optimised binary, as shipped;
#   dev: the debug binary `cargo test` already built (CI checks the package
#   with it, without a second, optimised build).
# Installs cargo-deb when missing. The man pages, completions and the unit
# are made from the binary and config/tocsin.service here, not kept twice.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
[ "${1:-}" = --profile ] && profile="${2:-release}"
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb --version '^3' --quiet
case "$profile" in
    release) cargo build --release --quiet; bin=target/release/tocsin ;;
    dev) cargo build --quiet; bin=target/debug/tocsin ;;
    *) echo "unknown profile $profile" >&2; exit 2 ;;
esac
assets=target/deb-assets
rm -rf "$assets" && mkdir -p "$assets/man"
cp "$bin" "$assets/tocsin"
"$bin" man "$assets/man"
gzip -9n "$assets"/man/*.1
"$bin" completions bash > "$assets/tocsin.bash"
"$bin" completions zsh > "$assets/_tocsin"
"$bin" completions fish > "$assets/tocsin.fish"
# The unit as shipped, for the package: the binary in /usr/bin, the
# package's system user instead of a dynamic one, and no credentials until
# the admin adds them (a LoadCredential= of a missing file stops the start).
sed -e 's|/usr/local/bin/tocsin|/usr/bin/tocsin|g' \
    -e 's|^DynamicUser=yes$|User=tocsin\nGroup=tocsin|' \
    -e 's|^LoadCredential=|#LoadCredential=|' \
    -e 's|^ConfigurationDirectoryMode=0755$|ConfigurationDirectoryMode=0750|' \
    -e 's|^# tocsin as a systemd service.*|# tocsin as a systemd service, as the Debian package installs it.|' \
    config/tocsin.service > "$assets/tocsin.service"
cargo deb --no-build --no-strip --quiet
ls target/debian/*.deb
