#!/usr/bin/env bash
# The agent's own CPU over a minute, from the debug and from the release
# build, under the same load: a getppid loop on one CPU (every call goes
# through the syscall family's hooks). Each build runs ROUNDS times, the two
# alternating, so that a drift of the machine falls on both.
#
#   cargo build --package sonde && cargo build --release --package sonde
#   sudo bash bench/agent-cpu.sh [SECONDS] [ROUNDS] > bench/results/agent-cpu-<date>.txt
#
# Prints one line per run and a summary line per build: the agent's user and
# system CPU time (from /proc/<pid>/stat) over the run, as a percentage of
# one CPU, and the load's getppid calls per second.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
rounds=${2:-2}
tick=$(getconf CLK_TCK)
python=${SONDE_PYTHON:-python3}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() {
    local build=$1 bin=target/$1/sonde log
    log=$(mktemp)
    "$bin" agent --interval 10s --json >/dev/null 2>"$log" &
    local agent=$!
    for _ in $(seq 200); do
        grep -q "agent ready" "$log" && break
        sleep 0.1
    done
    grep -q "agent ready" "$log" || { cat "$log" >&2; kill "$agent"; exit 1; }
    local before after calls
    before=$(cpu_ticks "$agent")
    calls=$("$python" -c "
import os, time
end = time.monotonic() + $seconds
n = 0
while time.monotonic() < end:
    for _ in range(10000):
        os.getppid()
    n += 10000
print(n)")
    after=$(cpu_ticks "$agent")
    kill -TERM "$agent"
    wait "$agent" || true
    rm -f "$log"
    awk -v b="$build" -v t=$((after - before)) -v hz="$tick" -v s="$seconds" -v c="$calls" \
        'BEGIN { printf "%-7s agent cpu %6.2f %% of one CPU (%d ticks in %d s)  load %.0f getppid/s\n", b, 100 * t / hz / s, t, s, c / s }'
}

echo "# $(uname -r) $(nproc) CPUs, $(date -u +%FT%TZ), ${seconds} s per run, ${rounds} rounds"
results=$(mktemp)
for _ in $(seq "$rounds"); do
    for build in debug release; do
        run "$build" | tee -a "$results"
    done
done
awk '{ cpu[$1] += $4; n[$1]++ } END { for (b in cpu) printf "%-7s mean agent cpu %.2f %% of one CPU over %d runs\n", b, cpu[b] / n[b], n[b] }' "$results" | sort
rm -f "$results"
