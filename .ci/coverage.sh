#!/usr/bin/env bash
# Line coverage of the whole test suite (instrumented `cargo test --workspace --all-features`,
# CLI tests included: the nova binary they spawn is instrumented too; doctests are not counted,
# that needs nightly). Prints the per-file table and a per-crate summary, and fails when the
# core (websockex-nova) or the Deribit adapter (websockex-nova-deribit) is below
# COVERAGE_MIN percent of lines (default 85).
# Set CARGO_BUILD_JOBS=1 to keep the one-time install and the build from using every core.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

COVERAGE_MIN="${COVERAGE_MIN:-85}"
CARGO_LLVM_COV_VERSION="${CARGO_LLVM_COV_VERSION:-0.9.1}"

# cargo-llvm-cov uses llvm-cov/llvm-profdata from the toolchain's llvm-tools component.
rustup component add llvm-tools-preview >/dev/null
if ! cargo llvm-cov --version >/dev/null 2>&1; then
    echo "installing cargo-llvm-cov ${CARGO_LLVM_COV_VERSION}"
    cargo install cargo-llvm-cov --version "${CARGO_LLVM_COV_VERSION}" --locked
fi
cargo llvm-cov --version

# Stale test binaries or profiles from an earlier build of other sources would be merged into
# the report (and skew it); start from a clean slate for the workspace crates (deps are kept).
cargo llvm-cov clean --workspace
cargo llvm-cov --workspace --all-features --no-report
cargo llvm-cov report --summary-only

summary=target/llvm-cov/summary.json
mkdir -p "$(dirname "$summary")"
cargo llvm-cov report --json --summary-only --output-path "$summary"

python3 - "$summary" "$COVERAGE_MIN" "$PWD" <<'PY'
import json, os, sys
from collections import defaultdict

path, minimum, root = sys.argv[1], float(sys.argv[2]), sys.argv[3]
crates_dir = os.path.join(root, "crates") + os.sep
lines = defaultdict(lambda: [0, 0])  # crate -> [count, covered]
for data in json.load(open(path))["data"]:
    for f in data["files"]:
        name = f["filename"]
        if not name.startswith(crates_dir):
            continue
        crate = name[len(crates_dir):].split(os.sep, 1)[0]
        s = f["summary"]["lines"]
        lines[crate][0] += s["count"]
        lines[crate][1] += s["covered"]

print()
print(f"{'crate':<26} {'lines':>7} {'covered':>8} {'cover':>8}")
for crate in sorted(lines):
    count, covered = lines[crate]
    pct = 100.0 * covered / count if count else 0.0
    print(f"{crate:<26} {count:>7} {covered:>8} {pct:>7.2f}%")

failed = []
for crate in ("websockex-nova", "websockex-nova-deribit"):
    count, covered = lines.get(crate, (0, 0))
    pct = 100.0 * covered / count if count else 0.0
    if pct < minimum:
        failed.append(f"{crate} {pct:.2f}%")
if failed:
    print(f"\nline coverage below {minimum:g}%: " + ", ".join(failed))
    sys.exit(1)
print(f"\ncore and adapter line coverage >= {minimum:g}%")
PY
