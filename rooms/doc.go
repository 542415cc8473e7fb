// Package rooms owns room classes and runs them: the class registry, the
// API a class is written against (Handler, Room, Conn, Storage, Alarm), and
// the Runtime that runs each room as an actor and persists what it writes.
//
// # Writing a class
//
// A class is a Handler, with any of StartHandler, ConnectHandler,
// CloseHandler, AlarmHandler, RequestHandler and RPCHandler (methods that
// Runtime.Call, Room.Call and the REST API call, each call one event),
// registered with Runtime.Register; docs/rooms.md is the guide and
// example_test.go a whole class. Handler methods run on the room's
// goroutine, one event at a time, and may use the Room and Conn they are
// given only while they run.
//
// # The seam with the gateway
//
// The gateway holds a Router and never parses a room's messages: it hands
// each complete client message to Router.Message and writes whatever the
// room sends through the Socket it was given. Router methods are called
// concurrently from many gateway goroutines; calls for one socket never
// overlap and arrive in the order its frames were read (DESIGN §3.3):
// Connect first, then every Message, then Closed exactly once. Runtime
// implements Router, and Admin for the REST API; both are safe for
// concurrent use once every class is registered.
//
// # Persistence
//
// An event's writes are committed together, atomically, when it returns;
// what it sends leaves only after that commit (the output gate). One commit
// per room is in flight while later events run against the uncommitted
// writes. docs/runtime.md explains the pipeline and its failure rules.
//
// # Hibernation
//
// A room idle for Options.HibernateAfter leaves memory while its sockets
// stay open: their membership records (package hibernation) are saved
// before it leaves (in a cluster, with every event that changes them), so
// eviction drops the instance and the next event builds one that loads
// them back and finds the sockets by id.
// Auto-responses (Room.SetAutoResponse) are answered by the gateway
// through Socket.SetAutoResponse without waking the room.
// docs/hibernation.md says what survives.
package rooms
