// Package localcoord is the storage.Coordinator of embedded mode: room
// leases with fencing tokens, and the registry of nodes, kept in memory
// by the one process that runs.
//
// It exists so that one code path serves one node and a cluster (DESIGN
// §2): package rooms runs its placement and lease code through a
// storage.Coordinator, and on a single node this one stands in for Redis
// (redisstore), with the same answers. storagetest.RunCoordinator checks
// both against the same suite.
//
// A Coordinator is safe for concurrent use: one mutex guards its maps,
// held only while a call reads or changes them. It starts no goroutine.
// Leases and heartbeats expire lazily, checked against time.Now on each
// call, so under testing/synctest the bubble's clock drives them. No call
// waits or does I/O, so the contexts they take are not consulted.
//
// Fencing tokens live as long as the Coordinator and start again at 1 in
// a new one. A store that outlives the process must therefore not be
// fenced with them: filestore keeps the highest token it has seen per
// room, and would refuse (storage.ErrFenced) every commit of a restarted
// node. In embedded mode batches carry Token 0, as they always have; the
// lock on the store's directory is the fence between processes.
package localcoord
