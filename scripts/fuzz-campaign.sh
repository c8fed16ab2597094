#!/usr/bin/env bash
# Coverage-guided fuzzing campaigns (bolero + libFuzzer with AddressSanitizer, nightly
# toolchain) over the readers of untrusted input, SECONDS per target, one after another.
# Prints one line per target: executions, edges covered, and whether it found a crash
# (bolero then keeps the input under the test's __fuzz__/TARGET/crashes/, which `cargo
# test` replays). Corpora are kept under __fuzz__/TARGET/corpus/ (not committed).
#
#   scripts/fuzz-campaign.sh [SECONDS] [PACKAGE...]   (default 600 s; hone-data hone-core hone-serve)
#
# Needs: rustup's nightly toolchain and cargo-bolero (`cargo install cargo-bolero`).
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-600}
shift || true
PACKAGES=("$@")
[ ${#PACKAGES[@]} -gt 0 ] || PACKAGES=(hone-data hone-core hone-serve)

targets() {
    case "$1" in
    hone-data) echo "fuzz_readers tsv_table csv_table jsonl_table conll_file token_jsonl_file parallel_text tables_round_trip" ;;
    hone-core) echo "fuzz_readers recipe_with_overrides model_config_json adapter_config_json tokenizer_json safetensors_header" ;;
    hone-serve) echo "fuzz_bodies request_bodies" ;;
    esac
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for package in "${PACKAGES[@]}"; do
    read -r _test names <<<"$(targets "$package")"
    [ -n "$names" ] || { echo "unknown package $package" >&2; exit 2; }
    for target in $names; do
        cargo bolero test --toolchain nightly -p "$package" "$target" \
            -T "${SECONDS_PER_TARGET}s" >"$log" 2>&1
        status=$?
        # libFuzzer's last status line: "#EXECS DONE cov: EDGES ft: ..." (or the last pulse).
        last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
        execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")
        cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
        crash=$([ $status -eq 0 ] && echo no || echo "YES (exit $status)")
        echo "$package $target: ${execs:-?} executions, ${cov:-?} edges, crash: $crash"
        [ $status -eq 0 ] || grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5
    done
done
