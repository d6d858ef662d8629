"""Medians and ratios of a compare.sh run: reads its JSON lines, prints a Markdown table."""
import json
import statistics
import sys
from collections import defaultdict

runs = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    scenario, target, _ = r["label"].split("/")
    runs[(scenario, target)].append(r)


def median(scenario, target, key, sub=None):
    values = []
    for r in runs.get((scenario, target), []):
        v = r.get(key)
        if sub is not None and v is not None:
            v = v.get(sub)
        if v is not None:
            values.append(v)
    return statistics.median(values) if values else None


def fmt(v, unit=""):
    if v is None:
        return "—"
    if isinstance(v, float) and v < 10:
        return f"{v:.2f}{unit}"
    return f"{v:,.0f}{unit}"


def ratio(a, b):
    return "—" if a is None or not b else f"{a / b:.2f}×"


rows = [
    ("a", "deliveries/s", "deliveries_per_sec", None),
    ("a", "p99 latency µs", "latency_us", "p99"),
    ("a", "delivery ratio", "delivery_ratio", None),
    ("a", "load generator CPU (cores)", "loadgen_cpu_cores", None),
    ("b", "deliveries/s", "deliveries_per_sec", None),
    ("b", "p99 latency µs", "latency_us", "p99"),
    ("b", "delivery ratio", "delivery_ratio", None),
    ("b", "load generator CPU (cores)", "loadgen_cpu_cores", None),
    ("c", "server CPU (cores)", "server_cpu_cores", None),
    ("c", "p99 latency µs", "latency_us", "p99"),
    ("c", "acked/s", "acked_per_sec", None),
    ("d", "RSS per idle connection (bytes)", "rss_per_connection_bytes", None),
    ("e", "acked/s (SQLite)", "acked_per_sec", None),
]
print("| scenario | metric | livechat | node | livechat / node |")
print("|---|---|---|---|---|")
for scenario, name, key, sub in rows:
    if not any(k[0] == scenario for k in runs):
        continue
    lc = median(scenario, "livechat", key, sub)
    node = median(scenario, "node", key, sub)
    print(f"| {scenario} | {name} | {fmt(lc)} | {fmt(node)} | {ratio(lc, node)} |")
pg = median("e", "livechat-postgres", "acked_per_sec")
if pg is not None:
    print(f"| e | acked/s (Postgres) | {fmt(pg)} | — | — |")
errors = defaultdict(int)
for (scenario, target), rs in runs.items():
    for r in rs:
        for code, n in (r.get("errors") or {}).items():
            errors[(scenario, target, code)] += n
if errors:
    print()
    print("errors: " + ", ".join(f"{s}/{t} {c}: {n}" for (s, t, c), n in sorted(errors.items())))
