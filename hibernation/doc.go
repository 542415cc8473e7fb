// Package hibernation is what lets a room leave memory while its sockets
// stay open: the persisted membership record of each socket (its user,
// tags and attachment), and the policy that picks which rooms to evict,
// the idle ones after HibernateAfter and, past a cap on active rooms, the
// least recently used first.
//
// The room runtime (package rooms) calls it: it saves a socket's record
// before its room leaves memory (in a cluster, with the event that changed
// it), evicts what Policy names, and loads the
// records when the room wakes, on this node or later on another. Nothing
// here keeps state; every function is safe for concurrent use.
package hibernation
