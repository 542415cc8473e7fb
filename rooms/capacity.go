package rooms

// Full reports whether room a runs on this node with Options.MaxSockets
// sockets already, so Admit can refuse a socket with 503 before the
// upgrade rather than close it after. It is a hint: a room that runs on
// another node, or has hibernated, is not seen here, and a race with a
// closing socket can go either way; the room's own check on Connect
// (ErrRoomFull) is the one that holds. Safe for concurrent use.
func (rt *Runtime) Full(a Addr) bool {
	in := rt.active(a)
	return in != nil && int(in.nconns.Load()) >= rt.o.MaxSockets
}
