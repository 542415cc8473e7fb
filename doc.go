// Package roomgate is the embedding API: it runs a Roomgate node (the
// gateway, the rooms runtime, the store) with your own room classes, from
// your own main. Room classes are Go, so an application builds its own
// binary; it gets every command, flag, environment variable, page and
// REST call of the roomgate binary (DESIGN §1), which is itself
// Main(Builtins()).
//
// # Your own binary
//
// A class is a rooms.Handler (see package rooms and docs/rooms.md).
// Register it with Class, next to the built-in classes or instead of them:
//
//	func main() {
//		roomgate.Main(
//			roomgate.Builtins(), // echo, counter, chat, canvas (optional)
//			roomgate.Class("poll", func() rooms.Handler { return new(Poll) }),
//		)
//	}
//
// Main runs `serve` (the default), `token`, `loadtest` and `version`, reads
// every flag and its ROOMGATE_* variable (flag > environment > default),
// drains on SIGTERM, reloads -tls-cert on SIGHUP, and exits as the roomgate
// binary does. Browsers reach the class at /ws/poll/{room}, and
// /v1/classes lists it.
//
// # Control: New and Run
//
// A program that wants control (a test, an application with its own HTTP
// routes, one that runs other servers too) builds a Server and runs it
// with a context instead. What the flags set is a Config; DefaultConfig
// holds the flags' defaults, and the serve command is this same code with
// the command line parsed into the Config:
//
//	c := roomgate.DefaultConfig()
//	c.Addr = "127.0.0.1:9000"
//	c.Data = "/var/lib/polls"
//	srv, err := roomgate.New(c,
//		roomgate.Builtins(),
//		roomgate.Class("poll", func() rooms.Handler { return new(Poll) }),
//		roomgate.Handle("GET /polls/{id}/summary", summary),
//	)
//	if err != nil {
//		log.Fatal(err)
//	}
//	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
//	defer stop()
//	err = srv.Run(ctx) // serves until ctx ends, then drains and closes the store
//
// Routes added with Handle share the node's listener; Roomgate's own
// routes (/ws/, /v1, /healthz, /readyz, /metrics) come first and cannot be
// taken, and yours come before Roomgate's pages. Server.Runtime gives Go
// code in the same process the rooms runtime the gateway routes to.
//
// # Concurrency
//
// Main, New and the Option constructors are for one goroutine at start.
// A Server's Run is called once; Addr, Runtime and ReloadTLS may be called
// from any goroutine while it runs. A Server holds no package-level
// state: a test may run several in one process, each on its own Data
// directory (the embedded store locks it).
package roomgate
