#!/usr/bin/env bash
# test/unit/run.sh — builds and runs the C unit tests that need no server
# (pure modules such as src/common/normalize.c). Prints TAP lines.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$(mktemp -d /tmp/apicount-unit-XXXX)
trap 'rm -rf "$out"' EXIT
cc -std=c99 -Wall -Wextra -Werror -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
	-I"$root/src/common" "$here/test_normalize.c" "$root/src/common/normalize.c" -o "$out/test_normalize"
"$out/test_normalize"
cc -std=c99 -Wall -Wextra -Werror -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
	-I"$root/src/common" "$here/test_latency_codec.c" "$root/src/common/latency_codec.c" -lm -o "$out/test_latency_codec"
"$out/test_latency_codec"
cc -std=gnu99 -Wall -Wextra -Werror -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
	-I"$root/src/common" -I"$root/ship" "$here/test_ship_parsers.c" "$root/ship/parse_combined.c" \
	"$root/ship/parse_json.c" "$root/ship/row.c" "$root/src/common/normalize.c" -lyajl -o "$out/test_ship_parsers"
"$out/test_ship_parsers"
