// Package client calls a Roomgate node from a Go backend: the admin REST
// API under /v1 (rooms, connections, kicks, broadcasts, storage, nodes)
// and RPC to rooms, as a Worker calls a Durable Object through its stub.
// It imports only the standard library and no package of the server, so
// a backend that links it links no storage, no WebSocket code and none of
// the server's dependencies.
//
// A Client is safe for concurrent use; make one per node (or load
// balancer) and share it. Room returns a stub, a free value that names one
// room and sends nothing until one of its methods is called.
//
// # Connecting
//
//	c, err := client.New("http://localhost:8080", client.Options{
//		Token: os.Getenv("ROOMGATE_ADMIN_TOKEN"), // roomgate token -sub ops -admin
//	})
//
// With a key configured on the node every call needs a token in
// Options.Token (or a fresh one from Options.TokenFunc): an admin token
// for the admin API; for RPC an admin token, or one whose rooms cover the
// room as docs/security.md says. A node in dev mode (no key) answers without one, but
// only to a client on its own machine that addresses it as localhost,
// 127.0.0.1 or [::1]; this package sends the Content-Type such a node
// asks of a POST.
//
// # Rooms
//
//	page, err := c.Rooms(ctx, client.RoomsQuery{Class: "chat", Limit: 50})
//	for info, err := range c.AllRooms(ctx, client.RoomsQuery{Class: "chat"}) { … }
//
//	lobby := c.Room("chat", "lobby")
//	info, err := lobby.Info(ctx)           // state, owner, connections, storage, alarm
//	conns, err := lobby.Connections(ctx)
//	err = lobby.Kick(ctx, conns[0].ID)     // closed with 4403
//	err = lobby.Broadcast(ctx, []byte(`{"type":"note","text":"maintenance at 5"}`))
//	err = lobby.Broadcast(ctx, frame, client.Binary(), client.Tag("mods"))
//	items, err := lobby.Storage(ctx, "msg:", 100)
//	err = lobby.Delete(ctx)                // sockets closed with 4404, storage gone
//
// # RPC
//
//	var n int
//	err := c.Room("counter", "x").Call(ctx, "increment", map[string]int{"by": 2}, &n)
//
// # Errors
//
// A refusal is an *Error with the HTTP status and the stable code of the
// node's {"error":{"code","message"}} body; compare codes with the Code
// constants, or use IsNotFound and CodeOf:
//
//	_, err := c.Room("chat", "gone").Info(ctx)
//	var e *client.Error
//	if errors.As(err, &e) && e.Code == client.CodeRoomNotFound { … }
//
// # Retries
//
// A call is tried up to Options.MaxAttempts times (default 5), waiting
// MinBackoff (100ms) doubled after each try up to MaxBackoff (2s), with
// jitter, or the node's Retry-After when longer (a Retry-After past
// MaxBackoff is not waited for: the *Error carries it); never past ctx's
// deadline: a wait that would outlast it fails the call at once. What is
// retried is what cannot do twice what was asked once:
//
//   - a 503 (draining, overloaded, room_full, unavailable) or 429
//     (rate_limited): the node refused before the room ran anything, so
//     every call, a broadcast or an RPC included;
//   - a connection that could not be opened (the node restarting): every
//     call, as nothing was sent;
//   - any other transport failure, and a proxy's 502 or 504: only the
//     calls that are idempotent, the GETs and Room.Delete. A broadcast, an
//     RPC or a kick that may have reached the node is not sent again.
//
// In a cluster one 503 is not a clean refusal: when the link to a room's
// owner breaks while a call is in flight, the edge answers 503 draining
// though the owner may have run it. Room.Call says what to do about it.
package client
