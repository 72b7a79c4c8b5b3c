#!/usr/bin/env bash
# The project's test command: `sudo scripts/test.sh` (or, as root, `bash scripts/test.sh`).
#
# 1. As root, installs the outside programs the integration tests use
#    (scripts/install-test-deps.sh; skip with FTP_TESTS_SKIP_INSTALL=1).
# 2. Points the tests at the extracted servers (FTP_TESTS_EXTRA_PATH).
# 3. cargo fmt --check, cargo clippy -D warnings, cargo test --all-targets, then a 30 s
#    fuzzing smoke run per cargo-fuzz target (scripts/fuzz.sh).
# Without root the tests that need vsftpd, curl, namespaces... print SKIPPED and pass,
# unless FTP_TESTS_REQUIRE_EXTERNAL=1 (set by .ci/run), which makes every skip a failure.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test vsftpd`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PREFIX="${FTP_TESTS_PREFIX:-/opt/ftpfront-test}"

step() { printf '\n==> %s\n' "$*"; }

# sudo drops ~/.cargo/bin from PATH: find the toolchain of the invoking user too.
if ! command -v cargo >/dev/null; then
    for dir in "${CARGO_HOME:-}/bin" "$HOME/.cargo/bin" ${SUDO_USER:+"$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin"}; do
        if [[ -n "$dir" && -x "$dir/cargo" ]]; then
            PATH="$dir:$PATH"
            break
        fi
    done
fi
command -v cargo >/dev/null || { echo "test.sh: cargo not found" >&2; exit 1; }

if [[ "$(id -u)" == 0 ]]; then
    if [[ "${FTP_TESTS_SKIP_INSTALL:-0}" != 1 ]]; then
        step "installing test dependencies (scripts/install-test-deps.sh)"
        bash scripts/install-test-deps.sh
    fi
else
    echo "test.sh: not root: tests that need vsftpd, root or network namespaces will be skipped" >&2
    echo "test.sh: (run 'sudo scripts/test.sh' to run them all)" >&2
fi

extra=(
    "$PREFIX/venv/bin"
    "$PREFIX/pure-ftpd/usr/sbin"
    "$PREFIX/proftpd-core/usr/sbin"
    "$PREFIX/prometheus/usr/bin"
    /usr/sbin
    /sbin
)
FTP_TESTS_EXTRA_PATH="$(IFS=:; echo "${extra[*]}")${FTP_TESTS_EXTRA_PATH:+:$FTP_TESTS_EXTRA_PATH}"
export FTP_TESTS_EXTRA_PATH
export FTP_TESTS_PREFIX="$PREFIX"

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

# The benchmark's floor relay is a crate of its own (benches/bare-relay): the same checks.
step "benches/bare-relay: cargo fmt --check, cargo clippy -D warnings"
cargo fmt --manifest-path benches/bare-relay/Cargo.toml -- --check
cargo clippy --locked --manifest-path benches/bare-relay/Cargo.toml --target-dir target -- -D warnings

# Passing tests' output is captured by the test harness, which would hide why a test was
# skipped: ask for it (--show-output) and keep only the SKIPPED lines of passing tests.
test_args=("$@")
has_separator=0
for arg in "$@"; do [[ "$arg" == -- ]] && has_separator=1; done
if ((has_separator)); then test_args+=(--show-output); else test_args+=(-- --show-output); fi
show_skips() {
    awk '
        /^successes:$/ { in_successes = 1; next }
        /^failures:$/ || /^test result:/ { in_successes = 0 }
        in_successes {
            if (match($0, /^---- .* stdout ----$/)) { name = substr($0, 6, length($0) - 17) }
            else if ($0 ~ /SKIPPED/) {
                line = $0; sub(/.*SKIPPED:? */, "", line)
                print "  SKIPPED " name ": " line
            }
            next
        }
        { print; fflush() }
    '
}

# The Dockerfile's build stage runs exactly this (tests/shipping.rs checks it), so CI
# proves the image would build: the production binary, without the `demo` feature.
step "cargo build --release --locked --no-default-features --bin ftpfront"
cargo build --release --locked --no-default-features --bin ftpfront

# Process-level tests (CPU per MiB, logs, signals) run the release binary just built, the
# one the image ships (the tests of `ftpfront demo` run the debug build, which has it).
export FTP_TESTS_FTPFRONT_BINARY="$PWD/target/release/ftpfront"

step "cargo test --all-targets $*"
cargo test --all-targets "${test_args[@]}" 2>&1 | show_skips

# Fuzzing smoke run: every cargo-fuzz target for 30 s from its committed corpus (or, with
# no nightly toolchain, the proptest suite of the same codec); scripts/fuzz.sh says which.
step "fuzz smoke run (scripts/fuzz.sh)"
bash scripts/fuzz.sh

step "all checks passed"
