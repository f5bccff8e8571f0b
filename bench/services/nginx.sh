#!/usr/bin/env bash
# The cost of the HTTP service sources: one ductd (release) carrying 1,000
# `duct.sources.nginx.Nginx` sources polling one local nginx's stub_status
# every second (each source keeps its connection open), beside 1,000
# `duct.sources.network.HTTP` checks of the same nginx (a fresh connection
# per check, as probers do), each run alone. Events go to a Null output.
# Prints CPU per check (from /proc/PID/stat over the measured window) and
# VmRSS and RssAnon at the end. Not part of `cargo test`.
#
#   bench/services/nginx.sh [seconds per run, default 30]
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN=${1:-30}
SOURCES=${SOURCES:-1000}
BIN=target/release/ductd
[ -x "$BIN" ] || cargo build --release --bin ductd
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

WORK=$(mktemp -d /tmp/ductd-bench-nginx.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n 8192

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
    location = /nginx_status { stub_status; }
    location = / { default_type text/plain; return 200 "ok\n"; }
  }
}
EOF
"$NGINX" -c "$WORK/nginx.conf" &
PIDS+=($!)
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done

# $1: run name; $2: the source block (YAML flow mapping).
run() {
  local name=$1 block=$2
  python3 - "$SOURCES" "$block" > "$WORK/$name.yml" <<'EOF'
import sys
n, block = int(sys.argv[1]), sys.argv[2]
hosts = ", ".join(f"h{i}" for i in range(n))
print(f"""interval: 1
outputs:
  - {{output: duct.outputs.null.Null}}
toolbox:
  checks:
    sources: [{block}]
blueprint:
  - toolbox: checks
    sets: {{hostname: [{hosts}]}}
""")
EOF
  "$BIN" check -c "$WORK/$name.yml" >/dev/null
  "$BIN" -c "$WORK/$name.yml" 2> "$WORK/$name.log" &
  local pid=$!
  PIDS+=("$pid")
  python3 - "$pid" "$SECONDS_PER_RUN" "$SOURCES" "$name" <<'EOF'
import os, sys, time
pid, duration, n, name = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tck = os.sysconf("SC_CLK_TCK")
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tck
def mem(key):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(key):
            return int(l.split()[1])
time.sleep(3)
c1, w1 = cpu(), time.time()
time.sleep(duration)
c2, w2 = cpu(), time.time()
checks = n * (w2 - w1)
print(f"{name:>6}: {n} sources at 1 s: CPU {100 * (c2 - c1) / (w2 - w1):.1f} % of a core, "
      f"{1e6 * (c2 - c1) / checks:.0f} us per check; VmRSS {mem('VmRSS:') / 1024:.1f} MiB, "
      f"RssAnon {mem('RssAnon:') / 1024:.1f} MiB")
EOF
  kill -TERM "$pid"
  wait "$pid" || true
  if grep -q "critical" "$WORK/$name.log"; then grep -m3 "critical" "$WORK/$name.log" >&2; fi
}

echo "nginx on 127.0.0.1:$PORT; $SECONDS_PER_RUN s per run" >&2
run nginx "{service: nginx, source: duct.sources.nginx.Nginx, url: 'http://127.0.0.1:$PORT/nginx_status'}"
run http "{service: http, source: duct.sources.network.HTTP, url: 'http://127.0.0.1:$PORT/'}"
