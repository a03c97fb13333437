// Package bench holds chatd's load benchmarks: real sockets over loopback,
// with the broker and the clients in one process (at most 9,000 sockets,
// two file descriptors each, under a 20,000 open-files limit).
//
//	go test ./bench -bench . -benchtime 1x   # CI smoke run, a minute or so
//	go test ./bench -bench Fanout -benchtime 20000x -count 3
//
// Each benchmark reports what users care about with b.ReportMetric:
// handshakes/s, deliveries/s, latency percentiles in ms, bytes per idle
// socket, expiry lateness. The figures for a chatd and its clients in
// separate processes come from cmd/chatbench; BENCHMARKS.md has both.
// The client harness is the package bench/load.
package bench
