#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seeds: the captured real inputs of the
# test tree (crates/*/tests/fixtures, tests/data, config/), copied rather
# than kept twice in git, with the leading byte the target reads to choose
# a parser where it has several; and a few inputs written out here for the
# decoders that have no capture. Idempotent: run it before fuzzing (the
# corpus only grows from there); existing corpus files are kept.
set -euo pipefail
cd "$(dirname "$0")"
# FUZZ_CORPUS: another directory to seed (default fuzz/corpus).
corpus=${FUZZ_CORPUS:-corpus}
fx=../crates/duct-sources/tests/fixtures

# seed TARGET SELECTOR FILE...: each FILE as a seed of TARGET, after the
# SELECTOR byte (two hex digits, or - for none).
seed() {
  local target=$1 selector=$2
  shift 2
  mkdir -p "$corpus/$target"
  for f in "$@"; do
    [ -f "$f" ] || continue
    local name
    name=$(basename "$(dirname "$f")")_$(basename "$f")
    {
      [ "$selector" = - ] || printf "\\x$selector"
      cat "$f"
    } >"$corpus/$target/$name"
  done
}

# literal TARGET NAME: standard input as the seed NAME of TARGET.
literal() {
  mkdir -p "$corpus/$1"
  cat >"$corpus/$1/$2"
}

seed proc 00 $fx/linux/stat*
seed proc 01 $fx/linux/meminfo*
seed proc 02 $fx/linux/loadavg
seed proc 03 $fx/linux/diskstats-*
seed proc 04 $fx/linux/net-dev*
seed proc 05 $fx/linux/pid-stat*
seed proc 06 $fx/linux/pid-status
seed proc 07 $fx/linux/uptime
seed proc 08 $fx/linux/passwd
seed proc 09 $fx/linux/mounts*
seed proc 0a $fx/linux/process-snapshot

seed host_commands 00 $fx/linux/sensors-u
seed host_commands 01 $fx/linux/smartctl-scan
seed host_commands 02 $fx/linux/smartctl-a-*
seed host_commands 03 $fx/linux/ipsec-statusall
{ cat $fx/linux/swanctl-list-conns; printf '\0'; cat $fx/linux/swanctl-list-sas; } >/tmp/ductd-fuzz-swanctl.$$
seed host_commands 04 /tmp/ductd-fuzz-swanctl.$$
rm -f /tmp/ductd-fuzz-swanctl.$$

seed service_text 00 $fx/nginx/*
seed service_text 01 $fx/apache/*
seed service_text 02 $fx/haproxy/*.csv
seed service_text 03 $fx/unbound/*
seed service_text 04 $fx/rabbitmq/*.txt
seed service_text 05 $fx/postgresql/*.csv
seed service_text 06 $fx/ds18b20/*.w1_slave

seed service_json 00 $fx/elasticsearch/cluster_stats* $fx/elasticsearch/unauthorized*
seed service_json 01 $fx/elasticsearch/nodes_stats*
seed service_json 02 $fx/riak/*.json
seed service_json 03 $fx/docker/containers* $fx/docker/inspect*
seed service_json 04 $fx/docker/stats-*
seed service_json 05 $fx/rabbitmq/*.json
seed service_json 06 $fx/uwsgi/*.json

seed munin - $fx/munin/*
seed memcache - $fx/memcache/*
seed resp - $fx/redis/*
seed nut - $fx/nut/*
seed dns - $fx/network/*.dns
seed snmp - $fx/snmp/*.bin

seed nats 00 ../tests/data/nats/*.json
seed nats 01 ../tests/data/nats/*.senml-json
seed nats 02 ../tests/data/nats/*.senml-cbor
seed nats 03 ../tests/data/nats/*.senml-cbor-extended

seed config - ../config/default.yml ../config/examples/*.yml ../config/examples/*/*.yml ../deploy/*/duct.yml

# The certificates' DER, as a TLS peer sends it.
mkdir -p "$corpus/cert"
for pem in $fx/network/cert-*.pem; do
  sed '/-----/d' "$pem" | base64 -d >"$corpus/cert/$(basename "$pem" .pem).der"
done

# nginx logs after the format they were written in (see their README).
for f in combined main; do
  { echo $f; cat $fx/nginx-log/$f.log; } | literal nginx_log $f
done
{
  echo '$remote_addr $host [$time_iso8601] "$request" $status $bytes_sent $request_time $msec "$http_user_agent" ${request_length}b'
  cat $fx/nginx-log/timed.log
} | literal nginx_log timed
printf '%%h %%l %%u %%t "%%r" %%>s %%b\n127.0.0.1 - - [03/Dec/2026:06:20:02 +0000] "GET / HTTP/1.1" 200 612\n' |
  literal nginx_log apache

# Riemann: one event {host h, service s, metric 1}, as a message and as a
# frame after its read-size byte.
printf '\x32\x08\x22\x01h\x1a\x01s\x68\x02' | literal riemann_msg event
printf '\x03\x00\x00\x00\x0a\x32\x08\x22\x01h\x1a\x01s\x68\x02' | literal riemann_frame event
printf '\x32\x0c\x4a\x06\x0a\x01k\x12\x01v\x3a\x01t\x2a\x00' | literal riemann_msg attributes

# exec plugins: exit code byte, then the output.
printf '\x00OK - load average: 0.10 | load1=0.1;1;2;0; load5=0.2;;;0;\nmore | x=1s\n' | literal exec nagios
printf '\x02{"service": "a", "metric": 1.5, "state": "critical", "tags": ["t"], "ttl": 5}\n{"metric": 3}\n' | literal exec json
printf '\x0042\n' | literal exec number

printf '%s' '> 0.9' | literal trigger greater
printf '%s' '>= 3 and not (service < 10) or service == 1.5e3' | literal trigger logic
printf '%s' 'sin(x) * 10' | literal math sin
printf '%s' 'max(abs(x), floor(x / 3), 2 ** -x, x // 4 % 7)' | literal math mixed

printf '\x25STAT a 1\r\nSTAT b 2\r\n\r\nEND\r\nlong line here\n' | literal lines text

# sFlow v5: a datagram from 192.0.2.7 with an interface counter sample and
# a flow sample of one TCP frame's headers (the layout of the unit tests'
# generator in crates/duct-sources/src/sflow/datagram.rs).
python3 - >"$(mkdir -p "$corpus/sflow" && echo "$corpus/sflow/counters-and-flow")" <<'PY'
import struct, sys
def put(*words): return b"".join(struct.pack(">I", w & 0xffffffff) for w in words)
def opaque(data): return put(len(data)) + data + b"\0" * ((4 - len(data) % 4) % 4)
counters = put(3, 6, 2, 0x540be400, 1, 3, 1, 5, 42, 7, 8, 9, 1, 0, 0, 777, 9, 1, 2, 3, 0, 0)
frame = bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0, 0x45, 0, 5, 0xdc, 0, 0, 0x40, 0, 64, 6, 0, 0,
               10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack(">HH", 40000, 443) + bytes(16)
d = put(5, 1) + bytes([192, 0, 2, 7]) + put(0, 11, 123456, 2)
d += put(2) + opaque(put(11, 1, 1) + put(1) + opaque(counters))
record = put(1, len(frame) + 4, 4) + opaque(frame)
d += put(1) + opaque(put(11, 3, 400, 4000, 0, 3, 0x40000007, 1) + put(1) + opaque(record))
sys.stdout.buffer.write(d)
PY
