#!/usr/bin/env python3
"""test/ship/count_logs.py FORMAT FILE... — an independent count of access log lines.

Written apart from apicount-ship (Python's re and json, not the C parsers): prints one line
"path<TAB>class<TAB>count" per normalized path and status class (ok = 100-399, client_errors =
4xx, server_errors = 5xx), then "lines<TAB>N" and "bad<TAB>N". Paths are normalized as
apicount documents it: query string and fragment stripped, a segment of digits, a UUID or 16+
hex characters becomes :id, and a path over 256 bytes is cut at a character boundary.
"""
import json
import re
import sys
from collections import Counter

COMBINED = re.compile(
    r'^(\S+) (\S+) (\S+) \[([^\]]+)\] "(\S+) (\S+)(?: [^"]*)?" (\d{3}) (\d+|-)'
    r'(?: "(?:[^"\\]|\\.)*" "(?:[^"\\]|\\.)*"(?: (\d+(?:\.\d+)?|-))?)?$')
UUID = re.compile(r'^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')
HEX = re.compile(r'^[0-9a-fA-F]{16,}$')


def normalize(path):
    path = re.split(r'[?#]', path, 1)[0]
    segs = path.split('/')
    path = '/'.join(':id' if s and (s.isdigit() or UUID.match(s) or HEX.match(s)) else s for s in segs)
    b = path.encode('utf-8', 'surrogateescape')
    if len(b) > 256:  # apicount truncates at a character boundary
        cut = 256
        while cut > 0 and (b[cut] & 0xC0) == 0x80:
            cut -= 1
        path = b[:cut].decode('utf-8', 'surrogateescape')
    return path


def status_class(status):
    if status >= 500:
        return 'server_errors'
    if status >= 400:
        return 'client_errors'
    return 'ok'


def main():
    fmt, files = sys.argv[1], sys.argv[2:]
    counts = Counter()
    lines = bad = 0
    for name in files:
        with open(name, 'rb') as f:
            for raw in f:
                line = raw.rstrip(b'\n').decode('utf-8', 'replace')
                lines += 1
                if fmt == 'combined':
                    m = COMBINED.match(line)
                    if not m:
                        bad += 1
                        continue
                    path, status = m.group(6), int(m.group(7))
                else:
                    try:
                        o = json.loads(line)
                        path, status = o['uri'], int(o['status'])
                    except (ValueError, KeyError, TypeError):
                        bad += 1
                        continue
                counts[(normalize(path), status_class(status))] += 1
    for (path, cls), n in sorted(counts.items()):
        print(f'{path}\t{cls}\t{n}')
    print(f'lines\t{lines}')
    print(f'bad\t{bad}')


if __name__ == '__main__':
    main()
