#!/bin/bash
# Every test: formatting and lints, host unit and loop-device tests (cargo), then the VM tests (real kernel,
# real device-mapper). Run as root on Debian 12; installs what it needs itself.
# The last line is "N passed, N failed" over both.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tests/vm/setup.sh || { echo "setup failed"; exit 1; }
# The Debian roots of the boot tests (mmdebstrap: downloads and dpkg, little CPU) build while
# cargo compiles; a test that needs one waits for its build's lock (debian/build-root.sh).
export VM_WORK=${VM_WORK:-$root/vm-work}
mkdir -p "$VM_WORK"
( for flavor in initramfs-tools dracut; do tests/vm/debian/build-root.sh "$VM_WORK/kernel" "$flavor"; done ) \
  > "$VM_WORK/build-root.log" 2>&1 &
# tests/completions.rs runs the completion scripts in bash, zsh and fish.
command -v zsh >/dev/null && command -v fish >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q zsh fish >/dev/null || { echo "setup failed"; exit 1; }

# The code's habits: rustfmt.toml's layout, no clippy warning (with the lints of Cargo.toml).
lint_fail=0
cargo fmt --all --check || { echo "FAIL cargo fmt --check"; lint_fail=$((lint_fail + 1)); }
cargo clippy --workspace --all-targets --features fault-injection -- -D warnings ||
  { echo "FAIL cargo clippy"; lint_fail=$((lint_fail + 1)); }

# In the profile and with the features of the VMs' build (tests/vm/run.sh), which then
# compiles nothing again: one build of the dependencies instead of two. The fault points'
# own test runs once more without the feature: a build without it must never fire one.
log=$(mktemp)
{ cargo test --workspace --release --features fault-injection && cargo test --release --lib fault::; } 2>&1 | tee "$log"
cargo_rc=${PIPESTATUS[0]}
h_pass=$(awk '/^test result:/ {s += $4} END {print s + 0}' "$log")
h_fail=$(awk '/^test result:/ {s += $6} END {print s + 0}' "$log")
[ "$cargo_rc" -eq 0 ] || [ "$h_fail" -gt 0 ] || h_fail=1   # a build failure runs no test
h_fail=$((h_fail + lint_fail))
# Each panic and the line that says why (other threads' log lines skipped), for the recap.
hwhy=$(awk '/panicked at/ { print "  ! " substr($0, 1, 200); want = 1; next }
  want && !/^(# libcryptsetup|pvencrypt: trace)/ { print "  ! " substr($0, 1, 300); want = 0 }' "$log" | head -n 12)
rm -f "$log"

vlog=$(mktemp)
tests/vm/run.sh "$@" 2>&1 | tee "$vlog"
v_pass=$(awk '/^[0-9]+ passed, [0-9]+ failed$/ {p = $1} END {print p + 0}' "$vlog")
v_fail=$(awk '/^[0-9]+ passed, [0-9]+ failed$/ {f = $3} END {print f + 0}' "$vlog")
grep -qE '^[0-9]+ passed, [0-9]+ failed$' "$vlog" || v_fail=$((v_fail + 1))
rm -f "$vlog"

[ -z "$hwhy" ] || printf 'host failures:\n%s\n' "$hwhy"
echo "host: $h_pass passed, $h_fail failed; vm: $v_pass passed, $v_fail failed"
echo "$((h_pass + v_pass)) passed, $((h_fail + v_fail)) failed"
[ $((h_fail + v_fail)) -eq 0 ]
