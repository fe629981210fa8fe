#!/usr/bin/env bash
# Dependency policy check: licences, bans (duplicate versions), sources. Config: deny.toml.
# Advisories are not checked here: the RustSec database lives on GitHub, which these machines
# cannot reach (`cargo deny --offline` never fetches it).
# Set CARGO_BUILD_JOBS=1 to keep the one-time install of cargo-deny from using every core.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_DENY_VERSION="${CARGO_DENY_VERSION:-0.20.2}"
if ! cargo deny --version >/dev/null 2>&1; then
    echo "installing cargo-deny ${CARGO_DENY_VERSION}"
    cargo install cargo-deny --version "${CARGO_DENY_VERSION}" --locked
fi
cargo deny --version

# `cargo metadata` (run by cargo-deny) needs every crate of the lock file in the local registry
# cache, including the ones for other platforms (Windows, macOS) that no build here downloads.
# crates.io is reachable; after this the check itself runs offline.
cargo fetch --locked --quiet

cargo deny --offline --all-features check licenses bans sources
