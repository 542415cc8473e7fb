// Package linknet carries the links between cluster nodes: it opens a byte
// stream to another node, runs the handshake that tells each side who the
// other is, and hands over the stream. What travels on it (the framed
// messages, pings, who answers what) belongs to package rooms, whose link
// type sits on top of a Transport; this package knows nothing of rooms.
//
// Two transports implement it. TCP is production's: a TCP connection to the
// node's own HTTP listener, upgraded at Path, the handshake in the upgrade's
// headers. Network is an in-memory network for tests, on which a test can
// drop, delay, reset and partition what one node sends another, exactly
// where it wants to, and which starts no goroutine, so it works inside a
// testing/synctest bubble.
//
// The package is not called link because rooms already has a link: the
// framed, pinged connection this package's streams become.
//
// Both transports are safe for concurrent use. An Acceptor's methods are
// called concurrently, one call per link dialed to its node.
package linknet
