#!/usr/bin/env python3
"""bench/workloads/gen_access_log.py ROWS LOG CSV — the same requests twice: as an nginx
combined log with $request_time (for apicount-ship) and as CSV rows of apicount.requests
(ts, method, path, client_ip, user_id, status, latency_ms) for COPY.  1,000 paths (Zipf-like),
100,000 client IPs, statuses 200/304/404/500, times spread over the last 50 minutes."""
import random
import sys
import time

rows, log_path, csv_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rnd = random.Random(42)
now = int(time.time())
start = now - 3000
paths = [f'/api/v1/r{i}/items' for i in range(1000)]
weights = [1.0 / (i + 1) ** 1.1 for i in range(1000)]
cum = []
acc = 0.0
for w in weights:
    acc += w
    cum.append(acc)
methods = ['GET'] * 6 + ['POST', 'PUT', 'DELETE']
statuses = [200] * 14 + [304, 404, 404, 500]
months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']
import bisect
with open(log_path, 'w') as log, open(csv_path, 'w') as csv:
    for i in range(rows):
        t = start + i * 3000 // rows
        g = time.gmtime(t)
        p = paths[bisect.bisect_left(cum, rnd.random() * acc)]
        m = rnd.choice(methods)
        ip = f'10.{rnd.randrange(2)}.{rnd.randrange(256)}.{rnd.randrange(196)}'
        st = rnd.choice(statuses)
        rt = rnd.randrange(1, 500)
        user = f'u{rnd.randrange(1000)}' if i % 4 == 0 else None
        log.write(f'{ip} - {user or "-"} [{g.tm_mday:02d}/{months[g.tm_mon - 1]}/{g.tm_year}:'
                  f'{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} +0000] "{m} {p}?page={i % 7} HTTP/1.1" '
                  f'{st} 512 "-" "bench/1.0" {rt // 1000}.{rt % 1000:03d}\n')
        csv.write(f'{time.strftime("%Y-%m-%d %H:%M:%S", g)}+00,{m},{p}?page={i % 7},{ip},'
                  f'{user or ""},{st},{rt}\n')
