#!/usr/bin/env bash
# figures.sh reproduces the figures of BENCHMARKS.md: chatd pinned to core
# 0, chatbench to core 1, a fresh chatd for every run, each figure RUNS
# times (default 3), and prints the median of each. Needs taskset and jq.
#
#   bench/figures.sh            # all figures, 3 runs each (about 15 minutes)
#   RUNS=5 bench/figures.sh fanout paced
#   PLOTS=bench/plots bench/figures.sh plots   # redraw the plots of BENCHMARKS.md
#   HALTPOLL_NS=20000000 bench/figures.sh paced  # with guest halt polling (root)
#
# HALTPOLL_NS sets how long an idle vCPU may poll before it halts (a KVM
# guest's haltpoll cpuidle governor) for the runs, and puts the old limit
# back at the end: on a VM whose host is slow to wake a halted vCPU, that
# wake-up is the "steal" that sets paced p99 (BENCHMARKS.md, "Steal is the
# wake-up of an idle vCPU").
# Everything goes to 127.0.0.1:$PORT; every run is bounded in time.
set -euo pipefail

RUNS=${RUNS:-3}
PORT=${PORT:-3917}
OUT=${OUT:-$(mktemp -d /tmp/chatd-figures.XXXXXX)}
SECRET=${SECRET:-figures-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
URL=ws://127.0.0.1:$PORT/ws
cd "$(dirname "$0")/.."

go build -o "$OUT/chatd" ./cmd/chatd
go build -o "$OUT/chatbench" ./cmd/chatbench
echo "binaries and results in $OUT (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"

chatd_pid=
start_chatd() {
	stop_chatd
	rm -rf "$OUT/data"
	taskset -c 0 "$OUT/chatd" --addr 127.0.0.1:$PORT --data-dir "$OUT/data" --jwt-secret "$SECRET" \
		--history memory --rate-limit 100000 --log-level warn "$@" >>"$OUT/chatd.log" 2>&1 &
	chatd_pid=$!
	for _ in $(seq 100); do
		curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && return 0
		sleep 0.1
	done
	echo "chatd did not start; see $OUT/chatd.log" >&2
	exit 1
}
stop_chatd() {
	if [ -n "$chatd_pid" ]; then
		kill "$chatd_pid" 2>/dev/null || true
		wait "$chatd_pid" 2>/dev/null || true
		chatd_pid=
	fi
}
HALTPOLL=/sys/module/haltpoll/parameters/guest_halt_poll_ns
old_haltpoll=
restore_haltpoll() {
	if [ -n "$old_haltpoll" ]; then
		echo "$old_haltpoll" >"$HALTPOLL"
		old_haltpoll=
	fi
}
trap 'restore_haltpoll; stop_chatd' EXIT
if [ -n "${HALTPOLL_NS:-}" ]; then
	if ! [[ $HALTPOLL_NS =~ ^[0-9]+$ ]]; then
		echo "HALTPOLL_NS is in nanoseconds, a whole number (20 ms: 20000000), not $HALTPOLL_NS" >&2
		exit 2
	fi
	governor=$(cat /sys/devices/system/cpu/cpuidle/current_governor_ro 2>/dev/null || true)
	if [ "$governor" != haltpoll ] || [ ! -w "$HALTPOLL" ]; then
		echo "HALTPOLL_NS needs root and a KVM guest idling with the haltpoll governor (in use: ${governor:-none}; $HALTPOLL)" >&2
		exit 2
	fi
	old_haltpoll=$(cat "$HALTPOLL")
	echo "$HALTPOLL_NS" >"$HALTPOLL"
	echo "guest halt polling $HALTPOLL_NS ns for these runs (was $old_haltpoll)"
fi

bench() { # NAME ARGS...: RUNS runs into $OUT/NAME.N.json
	local name=$1
	shift
	for i in $(seq "$RUNS"); do
		start_chatd
		CHATBENCH_SECRET=$SECRET taskset -c 1 "$OUT/chatbench" "$@" --url "$URL" --quiet --json >"$OUT/$name.$i.json" || true
		stop_chatd
	done
}

median() { # NAME JQ-EXPR
	# A figure a run left out (null) is no value: it does not enter the median.
	for f in "$OUT/$1".*.json; do jq -r "($2) // empty" "$f"; done | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
}

figures=("$@")
[ ${#figures[@]} -eq 0 ] && figures=(fanout paced paced-read connect memory expiry expiry-linger0 expiry9)
for fig in "${figures[@]}"; do
	case $fig in
	fanout)
		bench fanout fanout --sockets 1000 --senders 4 --window 4 --size 64 --warmup 2s --duration 10s
		echo "fanout 1000 sockets, 4x4 in flight: $(median fanout .messages.deliveries_per_second) deliveries/s," \
			"p50 $(median fanout .messages.p50_ms) ms, p99 $(median fanout .messages.p99_ms) ms"
		;;
	paced)
		bench paced paced --sockets 1000 --rate 100 --senders 10 --size 64 --duration 20s
		echo "paced 100 msg/s into 1000: p50 $(median paced .messages.p50_ms) ms, p99 $(median paced .messages.p99_ms) ms," \
			"lost $(median paced .messages.lost); steal on chatd's core $(median paced '.steal.percent_by_cpu.cpu0 // 0')%"
		;;
	paced-read) # the same, timed when chatbench reads each frame (--clock read)
		bench paced-read paced --sockets 1000 --rate 100 --senders 10 --size 64 --duration 20s --clock read
		echo "paced, read clock: p50 $(median paced-read .messages.p50_ms) ms, p99 $(median paced-read .messages.p99_ms) ms," \
			"lost $(median paced-read .messages.lost)"
		;;
	connect)
		bench connect connect --sockets 9000 --concurrency 128
		echo "connect 9000: $(median connect .handshake.per_second) handshakes/s," \
			"RSS $(median connect .server.rss_per_socket_bytes) B/socket, heap $(median connect .server.heap_per_socket_bytes) B/socket"
		;;
	memory)
		# 130 s with every socket open takes in the runtime's forced GC
		# (every 2 minutes): the idle steady state, not handshake garbage.
		bench memory connect --sockets 9000 --concurrency 128 --settle 130s
		echo "memory 9000 idle, settled: RSS $(median memory .server.rss_per_socket_bytes) B/socket," \
			"heap $(median memory .server.heap_per_socket_bytes) B/socket"
		;;
	expiry9)
		bench expiry9 expiry --sockets 9000 --spread 9s
		echo "expiry 9000 over 9 s: lateness p50 $(median expiry9 .expiry.p50_ms) ms, p99 $(median expiry9 .expiry.p99_ms) ms," \
			"max $(median expiry9 .expiry.max_ms) ms, early $(median expiry9 .expiry.early);" \
			"when read: p99 $(median expiry9 .expiry.read_p99_ms) ms"
		;;
	expiry-linger0) # clients answer the close at once: their teardown competes
		bench expiry0 expiry --sockets 9000 --spread 3s --linger 0
		echo "expiry 9000, --linger 0: lateness p50 $(median expiry0 .expiry.p50_ms) ms, p99 $(median expiry0 .expiry.p99_ms) ms," \
			"max $(median expiry0 .expiry.max_ms) ms, early $(median expiry0 .expiry.early); when read: p99 $(median expiry0 .expiry.read_p99_ms) ms"
		;;
	expiry)
		bench expiry expiry --sockets 9000 --spread 3s
		echo "expiry 9000: lateness p50 $(median expiry .expiry.p50_ms) ms, p99 $(median expiry .expiry.p99_ms) ms," \
			"max $(median expiry .expiry.max_ms) ms, early $(median expiry .expiry.early);" \
			"when read: p99 $(median expiry .expiry.read_p99_ms) ms"
		;;
	plots)
		mkdir -p "${PLOTS:=$OUT}"
		start_chatd
		CHATBENCH_SECRET=$SECRET taskset -c 1 "$OUT/chatbench" fanout --url "$URL" --quiet --sockets 1000 \
			--senders 4 --window 4 --size 64 --warmup 2s --duration 10s --plot "$PLOTS/fanout.png" >/dev/null || true
		start_chatd
		CHATBENCH_SECRET=$SECRET taskset -c 1 "$OUT/chatbench" paced --url "$URL" --quiet --sockets 1000 \
			--rate 100 --senders 10 --size 64 --duration 20s --plot "$PLOTS/paced.png" >/dev/null || true
		stop_chatd
		echo "plots in $PLOTS"
		;;
	*)
		echo "unknown figure $fig (fanout, paced, paced-read, connect, memory, expiry, expiry-linger0, expiry9, plots)" >&2
		exit 2
		;;
	esac
done
