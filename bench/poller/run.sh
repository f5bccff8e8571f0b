#!/usr/bin/env bash
# A central poller, measured: one ductd (release) carrying 10,000 Ping
# sources against 10,000 loopback addresses (127.1.0.0/16 all answer on
# Linux), 2,000 TCP and 500 HTTP checks against a local nginx, every 10 s
# with `count: 1`, all from blueprints; then fping on the same addresses
# as the reference for CPU per probe. Not part of `cargo test`.
#
#   bench/poller/run.sh [seconds per run, default 65]
#
# Two runs of ductd with the same sources:
#   1. "verify": the checks' events go to a Logger file, to check that
#      every check reported at every interval with no loss, and to measure
#      tick lateness;
#   2. "measure": the checks' events go to a Null output, to measure what
#      the poller itself costs: start-up, RSS and CPU.
# In both, duct.sources.Duct reports the agent's own figures every second
# to a small Logger file. Results: target/bench-poller/ and a summary on
# standard output. Needs root (raw ICMP, or set ping_group_range), nginx,
# fping and python3. Traffic stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN=${1:-65}
PINGS=${PINGS:-10000}
TCPS=${TCPS:-2000}
HTTPS=${HTTPS:-500}
INTERVAL=${INTERVAL:-10}
# The spacing of first ticks: Duct's default (0.2 s, the checks tick in
# groups) unless STAGGER is given; STAGGER=spread spaces every check evenly
# over the interval (the load is smooth, but the agent wakes for each).
STAGGER=${STAGGER:-}
OUT=target/bench-poller
BIN=target/release/ductd

[ -x "$BIN" ] || cargo build --release --bin ductd
for tool in nginx fping python3; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "needs $tool" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

rm -rf "$OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/ductd-poller.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- nginx on a free loopback port
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/nginx.conf" <<EOF
daemon off;
master_process off;
worker_rlimit_nofile 8192;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/body;
  proxy_temp_path $WORK/proxy;
  fastcgi_temp_path $WORK/fastcgi;
  uwsgi_temp_path $WORK/uwsgi;
  scgi_temp_path $WORK/scgi;
  server {
    listen 127.0.0.1:$PORT;
    location = / { default_type text/plain; return 200 "ok\n"; }
  }
}
EOF
"$NGINX" -c "$WORK/nginx.conf" &
PIDS+=($!)
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done

# --- the addresses, and the configuration
python3 - "$PINGS" > "$WORK/addresses" <<'EOF'
import sys
n = int(sys.argv[1])
for i in range(n):
    print(f"127.1.{i // 250}.{i % 250 + 1}")
EOF

# $1: the route of the checks (discard or events); $2: the checks' Logger
# file; $3: the run's name.
write_config() {
  python3 - "$1" "$2" "$OUT/$3-agent.jsonl" "$WORK/addresses" "$PORT" "$TCPS" "$HTTPS" "$INTERVAL" "$STAGGER" <<'EOF'
import sys
route, events, agent, addresses, port, tcps, https, interval, stagger = sys.argv[1:]
addrs = open(addresses).read().split()
total = len(addrs) + int(tcps) + int(https)
lst = lambda xs: "[" + ", ".join(xs) + "]"
if stagger == "spread":
    stagger = f"{float(interval) / total:.6f}"
print(f"""interval: {interval}
{f"stagger: {stagger}" if stagger else "# stagger: Duct's default, 0.2 s"}
outputs:
  - {{output: duct.outputs.null.Null, name: discard}}
  - {{output: duct.outputs.logger.Logger, name: events, logfile: {events}}}
  - {{output: duct.outputs.logger.Logger, name: agent, logfile: {agent}}}
sources:
  - {{service: ductd, source: duct.sources.Duct, interval: 1, route: agent, start_delay: 0}}
toolbox:
  ping:
    sources: [{{service: ping, source: duct.sources.network.Ping, count: 1, route: {route}}}]
  tcp:
    sources: [{{service: tcp, source: duct.sources.network.TCP, host: 127.0.0.1, port: {port}, route: {route}}}]
  http:
    sources: [{{service: http, source: duct.sources.network.HTTP, url: 'http://127.0.0.1:{port}/', route: {route}}}]
blueprint:
  - toolbox: ping
    sets: {{hostname: {lst(addrs)}}}
  - toolbox: tcp
    sets: {{hostname: {lst(f"tcp-{i}" for i in range(int(tcps)))}}}
  - toolbox: http
    sets: {{hostname: {lst(f"http-{i}" for i in range(int(https)))}}}
""")
EOF
}

# $1: run name; $2: route. Starts ductd, samples it, stops it.
run_agent() {
  local name=$1 route=$2 events="$OUT/$1-events.jsonl"
  write_config "$route" "$events" "$name" > "$WORK/$name.yml"
  "$BIN" check -c "$WORK/$name.yml" >/dev/null
  local start
  start=$(date +%s.%N)
  "$BIN" -c "$WORK/$name.yml" 2> "$OUT/$name-stderr.log" &
  local pid=$!
  PIDS+=("$pid")
  # Start-up: until the agent logs that every actor is started.
  local started=""
  for _ in $(seq 600); do
    if grep -q "agent started" "$OUT/$name-stderr.log"; then started=$(date +%s.%N); break; fi
    sleep 0.01
  done
  # Resources: /proc every second, from the end of the first interval on.
  python3 - "$pid" "$SECONDS_PER_RUN" "$INTERVAL" > "$OUT/$name-proc.json" <<'EOF'
import json, os, sys, time
pid, duration, interval = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
tck = os.sysconf("SC_CLK_TCK")
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tck
def mem(key):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(key):
            return int(l.split()[1])
t0 = time.time()
time.sleep(interval + 1)
c1, w1 = cpu(), time.time()
rss = []
while time.time() - t0 < duration:
    time.sleep(1)
    rss.append(mem("VmRSS:"))
c2, w2 = cpu(), time.time()
print(json.dumps({"cpu_percent": 100 * (c2 - c1) / (w2 - w1), "cpu_seconds": c2 - c1, "wall": w2 - w1,
                  "rss_kib_max": max(rss), "rss_kib_last": rss[-1], "hwm_kib": mem("VmHWM:"),
                  "threads": len(os.listdir(f"/proc/{pid}/task"))}))
EOF
  kill -TERM "$pid"
  wait "$pid" || true
  python3 -c 'import json, sys; print(json.dumps({"startup_s": float(sys.argv[1]) - float(sys.argv[2])}))' \
    "${started:-0}" "$start" > "$OUT/$name-startup.json"
}

echo "ductd: $PINGS Ping + $TCPS TCP + $HTTPS HTTP every ${INTERVAL}s, stagger ${STAGGER:-0.2 (default)}; nginx on 127.0.0.1:$PORT" >&2
run_agent verify events
run_agent measure discard

# --- fping: the same addresses, once each, 1 ms apart (its fastest).
python3 - "$WORK/addresses" > "$OUT/fping.json" <<'EOF'
import json, resource, subprocess, sys, time
t = time.time()
p = subprocess.run(["fping", "-c", "1", "-q", "-i", "1", "-f", sys.argv[1]], capture_output=True, text=True)
wall = time.time() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN)
lines = [l for l in p.stderr.splitlines() if "xmt/rcv" in l]
lost = sum(1 for l in lines if "/0, " in l or "100%" in l)
print(json.dumps({"probes": len(lines), "lost": lost, "cpu_seconds": r.ru_utime + r.ru_stime,
                  "wall": wall, "maxrss_kib": r.ru_maxrss}))
EOF

python3 bench/poller/analyze.py "$OUT" "$PINGS" "$TCPS" "$HTTPS" "$INTERVAL"
