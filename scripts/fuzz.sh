#!/usr/bin/env bash
# Fuzzing smoke run of the parsers (fuzz/, cargo-fuzz + libFuzzer): `bash scripts/fuzz.sh`.
#
# Builds every fuzz target once, then runs each for FUZZ_SECONDS (default 30) from its
# committed seed corpus in fuzz/corpus/<target>, on a temporary copy so the tree stays
# clean. Fails if any target crashes; the crashing input is left in
# fuzz/artifacts/<target>/ (ignored by git) and printed.
# Without a nightly toolchain (cargo-fuzz needs one) it runs the property tests of the
# same codec instead: cargo test --test codec_props.
# FUZZ_TARGETS="addr reply_parser" picks targets; CARGO_TARGET_DIR is honoured.
# FUZZ_FLAGS: cargo-fuzz build flags. The default (a debug build, no sanitizer, debug
# assertions on) builds in a few minutes, for the CI smoke run; the parsers are safe Rust,
# so a crash is a panic or an overflow either way. For long local runs use an optimised
# AddressSanitizer build: FUZZ_FLAGS="-a" FUZZ_SECONDS=600 bash scripts/fuzz.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The cargo-fuzz release this script was checked with (builds with --locked here).
CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET="${FUZZ_SECONDS:-30}"
read -r -a flags <<<"${FUZZ_FLAGS:---dev --sanitizer none -a}"
read -r -a targets <<<"${FUZZ_TARGETS:-line_splitter_command reply_parser addr proxy_header config_toml}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: no nightly toolchain; running the proptest suite instead"
    status=0
    cargo test --test codec_props || status=$?
    exit "$status"
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# Debug assertions and overflow checks on (-a): an overflow is a finding too.
echo "fuzz: building the fuzz targets (${flags[*]})"
cargo +nightly fuzz build "${flags[@]}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The targets run side by side (libFuzzer is single-threaded), each for the full time:
# the smoke run costs SECONDS_PER_TARGET of wall time, not five times that.
declare -A pids
for target in "${targets[@]}"; do
    echo "fuzz: $target for ${SECONDS_PER_TARGET}s"
    mkdir -p "$work/$target"
    if [[ -d "fuzz/corpus/$target" ]]; then
        cp -R "fuzz/corpus/$target/." "$work/$target/"
    fi
    cargo +nightly fuzz run "${flags[@]}" "$target" "$work/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -print_final_stats=1 \
        >"$work/$target.log" 2>&1 &
    pids[$target]=$!
done

failed=()
for target in "${targets[@]}"; do
    if wait "${pids[$target]}"; then
        echo "fuzz: $target: $(grep -E '^stat::number_of_executed_units' "$work/$target.log" || echo 'no stats') "
        continue
    fi
    failed+=("$target")
    echo "fuzz: $target FAILED; its output:"
    tail -n 60 "$work/$target.log"
    for artifact in fuzz/artifacts/"$target"/*; do
        [[ -f "$artifact" ]] || continue
        echo "fuzz: $target: crashing input $artifact:"
        od -A d -c "$artifact" | head -n 40
    done
done

if ((${#failed[@]})); then
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${SECONDS_PER_TARGET}s each without a crash"
