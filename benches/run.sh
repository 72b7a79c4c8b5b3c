#!/usr/bin/env bash
# The benchmark command (not a test): `sudo bash benches/run.sh` builds the release binary,
# then benches/bench.py runs direct vsftpd, ftpfront and ProFTPD mod_proxy (when installed
# by scripts/install-test-deps.sh) in front of the same vsftpd, and the bare relay (the
# floor of one more hop), alternating round by round, and prints one table: medians with
# min/max, ratios to direct, and the machine.
#
#   sudo bash benches/run.sh              # full: 5 rounds, 1 GiB files, 10,000 idle sessions
#   sudo bash benches/run.sh --quick      # 1 round, small files (what .ci/run runs)
#   sudo bash benches/run.sh --rounds 7 --json /tmp/bench.json --keep
#
# Needs root (vsftpd and proftpd run as root and drop to nobody), vsftpd, curl, openssl and
# python3; ProFTPD mod_proxy is looked for under FTP_TESTS_PREFIX (/opt/ftpfront-test).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "bench: $*" >&2; exit 1; }
[[ "$(id -u)" == 0 ]] || die "needs root; try: sudo bash $0 $*"
if ! command -v cargo >/dev/null; then
    for dir in "$HOME/.cargo/bin" ${SUDO_USER:+"$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin"}; do
        [[ -x "$dir/cargo" ]] && PATH="$dir:$PATH" && break
    done
fi
command -v cargo >/dev/null || die "cargo not found"
PATH="$PATH:/usr/sbin:/sbin"

# The same build as the Dockerfile's and scripts/test.sh's, so CI builds it once.
echo "== cargo build --release --locked --no-default-features --bin ftpfront"
cargo build --release --locked --no-default-features --bin ftpfront
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
FTPFRONT="$TARGET_DIR/release/ftpfront"
[[ -x "$FTPFRONT" ]] || die "no binary at $FTPFRONT"

# The floor column: a relay that copies bytes and nothing else (benches/bare-relay, a
# crate of its own: it needs tokio only), built into the same target directory.
echo "== cargo build --release --locked --manifest-path benches/bare-relay/Cargo.toml"
cargo build --release --locked --manifest-path benches/bare-relay/Cargo.toml \
    --target-dir "$TARGET_DIR"
BARE_RELAY="$TARGET_DIR/release/bare-relay"
[[ -x "$BARE_RELAY" ]] || die "no bare relay binary at $BARE_RELAY"

exec python3 benches/bench.py --ftpfront "$FTPFRONT" --bare-relay "$BARE_RELAY" \
    --prefix "${FTP_TESTS_PREFIX:-/opt/ftpfront-test}" "$@"
