#!/usr/bin/env bash
# test/fuzz/run.sh [SECONDS] — builds the libFuzzer harness over src/normalize.c with
# ASan and UBSan and runs it for SECONDS (default 20) on the committed corpus.
# Prints one TAP line; prints "ok 1 # skip" when clang's fuzzer runtime is missing.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-20}
out=$(mktemp -d /tmp/apicount-fuzz-XXXX)
trap 'rm -rf "$out"' EXIT
CLANG=$(command -v clang || command -v clang-14 || true)
if [ -z "$CLANG" ] ||
   ! "$CLANG" -fsanitize=fuzzer,address,undefined -x c - -o "$out/probe" >/dev/null 2>&1 <<<'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){return 0;}'; then
	echo "ok 1 # skip fuzz: clang with the libFuzzer runtime is not installed"
	exit 0
fi
"$CLANG" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-I"$root/src" "$here/fuzz_normalize.c" "$root/src/normalize.c" -o "$out/fuzz_normalize" || {
	echo "not ok 1 - fuzz harness builds"; exit 1; }
# new inputs go to a scratch corpus; the committed corpus is only read
mkdir -p "$out/corpus"
if "$out/fuzz_normalize" -max_total_time="$secs" -max_len=4096 -print_final_stats=1 \
	"$out/corpus" "$here/corpus" >"$out/log" 2>&1; then
	runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/log" | grep -o '[0-9]*$')
	echo "ok 1 - fuzz normalize: ${runs:-?} inputs in ${secs}s, no finding"
else
	tail -n 40 "$out/log"
	echo "not ok 1 - fuzz normalize found a failure (see above)"
	exit 1
fi
