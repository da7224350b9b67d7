// Package hotpath holds benchmarks of the chat's hot paths end to end in
// one process: a load generator client, the gateway, the presence and
// friends proxies and their user functions, all over loopback. Run under
// the CPU profiler, one profile shows what every layer of a call costs.
// The package has no code outside its tests.
package hotpath
