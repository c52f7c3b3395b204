#!/usr/bin/env python3
"""Summarizes Nsight Compute's CSV of per-kernel times (`ncu --metrics gpu__time_duration.sum --csv`):
kernels grouped by name (template arguments dropped), with launches and total / mean microseconds, largest
first. Used by scripts/gpu_check on `bench_gpu --profile-step`.
  python3 bench/ncu_summary.py ncu.csv [rows]"""
import collections
import csv
import io
import re
import sys

lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
if start is None:
    sys.exit(f"{sys.argv[1]}: no CSV header from ncu")
scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
total = collections.defaultdict(lambda: [0, 0.0])
for row in csv.DictReader(io.StringIO("\n".join(lines[start:]))):
    name = row["Kernel Name"]
    m = re.match(r"void loom::for_each_kernel<(?:loom::)?([\w:]+)", name)  # name the functor launched
    key = m.group(1) if m else re.sub(r"<.*", "", name)
    us = float(row["Metric Value"].replace(",", "")) * scale.get(row["Metric Unit"], 1.0)
    total[key][0] += 1
    total[key][1] += us
rows = sorted(total.items(), key=lambda kv: -kv[1][1])
all_us = sum(t for _, t in total.values())
print(f"{sum(c for c, _ in total.values())} kernels, {all_us:.1f} us in all")
for key, (count, us) in rows[: int(sys.argv[2]) if len(sys.argv) > 2 else 25]:
    print(f"{count:6d} {us:10.1f} us {us / count:8.1f} us/launch {100 * us / all_us:5.1f}%  {key[:110]}")
