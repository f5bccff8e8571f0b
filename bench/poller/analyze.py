"""Summarises a bench/poller/run.sh run: coverage and loss from the
"verify" run's events, tick lateness, resources of the "measure" run,
and fping's CPU per probe beside ductd's.

Tick lateness: an event's time is stamped when its check finishes, a
fraction of a millisecond after the tick for a loopback Ping. For each
check, its ticks should fall on a grid t0 + k * interval; t0 is taken as
the earliest of (t_k - k * interval), so lateness is >= 0 and measures how
far each tick fell behind the best one of the same check. Pings that got
no reply are left out (their event is stamped when the wait ran out) and
counted apart.
"""

import json
import sys
from collections import defaultdict

out, pings, tcps, https, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
checks = pings + tcps + https


def load(name):
    return json.load(open(f"{out}/{name}"))


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# --- verify run: one record per check and tick
times = defaultdict(list)  # every report, for coverage
answered = defaultdict(list)  # reports of checks that got an answer, for lateness
states = defaultdict(int)
loss_nonzero = 0
for line in open(f"{out}/verify-events.jsonl"):
    e = json.loads(line)
    service = e["service"]
    if service == "ping.loss":
        times[("ping", e["host"])].append(e["time"])
        if e.get("metric") != 0:
            # Stamped when the reply's wait ran out: not a tick time.
            loss_nonzero += 1
        else:
            answered[("ping", e["host"])].append(e["time"])
    elif service in ("tcp.latency", "http.latency"):
        times[(service.split(".")[0], e["host"])].append(e["time"])
        answered[(service.split(".")[0], e["host"])].append(e["time"])
    else:
        continue
    states[e.get("state")] += 1

span = max(max(t) for t in times.values()) - min(min(t) for t in times.values()) if times else 0
# Intervals fully inside the run: every check must have reported in each.
first = min(min(t) for t in times.values())
last = max(max(t) for t in times.values())
whole = int((last - first) // interval) - 1
missing = 0
for key, ts in times.items():
    ts.sort()
    start = ts[0]
    for k in range(whole):
        lo, hi = start + (k - 0.5) * interval, start + (k + 0.5) * interval
        if not any(lo <= t < hi for t in ts):
            missing += 1

lateness = []
for ts in answered.values():
    ts.sort()
    grid = [(t, round((t - ts[0]) / interval)) for t in ts]
    base = min(t - k * interval for t, k in grid)
    lateness.extend((t - k * interval - base) * 1000 for t, k in grid)

agent = [json.loads(l) for l in open(f"{out}/verify-agent.jsonl")]
last_figures = {}
for e in agent:
    last_figures[e["service"]] = e.get("metric")

m = load("measure-proc.json")
v = load("verify-proc.json")
fp = load("fping.json")
ping_rate = pings / interval
ductd_cpu_per_probe = m["cpu_seconds"] / (m["wall"] * (checks / interval)) * 1e6
fping_cpu_per_probe = fp["cpu_seconds"] / max(fp["probes"], 1) * 1e6

summary = {
    "checks": checks,
    "checks_reporting": len(times),
    "whole_intervals_checked": whole,
    "missed_check_intervals": missing,
    "events_by_state": dict(states),
    "pings_with_loss": loss_nonzero,
    "tick_lateness_ms": {"p50": percentile(lateness, 50), "p99": percentile(lateness, 99), "max": max(lateness, default=0)},
    "agent_figures_at_end": {k: last_figures.get(k) for k in ("ductd.sources", "ductd.ticks skipped", "ductd.tick errors", "ductd.event rate", "ductd.tick lateness p50", "ductd.tick lateness p99", "ductd.tick lateness max")},
    "startup_s": {"verify": load("verify-startup.json")["startup_s"], "measure": load("measure-startup.json")["startup_s"]},
    "measure_null_output": m,
    "verify_logger_output": v,
    "fping": fp,
    "cpu_us_per_check": {"ductd": ductd_cpu_per_probe, "fping_per_probe": fping_cpu_per_probe},
}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
print(json.dumps(summary, indent=2))
