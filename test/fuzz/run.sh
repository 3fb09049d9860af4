#!/usr/bin/env bash
# test/fuzz/run.sh [SECONDS] — builds the libFuzzer harnesses with ASan and UBSan and runs
# each for SECONDS (default 20) on its committed corpus:
#   1. fuzz_normalize.c over src/common/normalize.c (corpus/);
#   2. fuzz_ship.c over apicount-ship's parsers and row writer (corpus_ship/; needs libyajl-dev).
# Prints one TAP line per harness; "ok N # skip" when clang's fuzzer runtime is missing.
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
	echo "ok 2 # skip fuzz: clang with the libFuzzer runtime is not installed"
	exit 0
fi
status=0

# run_fuzzer N NAME CORPUS: runs $out/NAME on a scratch corpus plus the committed one
run_fuzzer() {
	local n=$1 name=$2 corpus=$3
	# new inputs go to a scratch corpus; the committed corpus is only read
	mkdir -p "$out/corpus-$name"
	if "$out/$name" -max_total_time="$secs" -max_len=4096 -print_final_stats=1 \
		"$out/corpus-$name" "$corpus" >"$out/log-$name" 2>&1; then
		runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/log-$name" | grep -o '[0-9]*$')
		echo "ok $n - $name: ${runs:-?} inputs in ${secs}s, no finding"
	else
		tail -n 40 "$out/log-$name"
		echo "not ok $n - $name found a failure (see above)"
		status=1
	fi
}

if "$CLANG" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-I"$root/src/common" "$here/fuzz_normalize.c" "$root/src/common/normalize.c" -o "$out/fuzz_normalize"; then
	run_fuzzer 1 fuzz_normalize "$here/corpus"
else
	echo "not ok 1 - fuzz_normalize harness builds"; status=1
fi

if "$CLANG" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-I"$root/src/common" -I"$root/ship" "$here/fuzz_ship.c" "$root/ship/parse_combined.c" \
	"$root/ship/parse_json.c" "$root/ship/row.c" "$root/src/common/normalize.c" -lyajl \
	-o "$out/fuzz_ship"; then
	run_fuzzer 2 fuzz_ship "$here/corpus_ship"
else
	echo "not ok 2 - fuzz_ship harness builds"; status=1
fi
exit $status
