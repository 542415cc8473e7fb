package roomgate

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	"github.com/roomgate/roomgate/loadtest"
)

// modulePath is Roomgate's module, whose version `roomgate version`
// prints whichever program embeds it.
const modulePath = "github.com/roomgate/roomgate"

// version is set at build time with
// -ldflags "-X github.com/roomgate/roomgate.version=v1.2.3".
var version = ""

// Main is the roomgate command, run from a program's main: it reads
// os.Args and the environment, runs serve (the default), token, loadtest
// or version with the classes and routes opts give, and exits the process
// as the roomgate binary does: 0 after a clean shutdown, 1 with
// "roomgate: <error>" on stderr, 2 for an unknown command. It never
// returns. serve drains on SIGINT and SIGTERM (exiting 1 if that takes
// over 10 s) and reloads -tls-cert on SIGHUP. cmd/roomgate is
//
//	roomgate.Main(roomgate.Builtins())
//
// Call it only from main: a load run's worker processes are this program
// started again, and Main turns them into workers before anything else.
func Main(opts ...Option) {
	loadtest.ServeWorker() // a worker process of a distributed load run exits here
	os.Exit(run(os.Args[1:], opts))
}

// run is Main without the exit: it returns the process's exit code.
func run(args []string, opts []Option) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args, opts)
	case "loadtest":
		err = runLoadtest(args)
	case "token":
		err = runToken(args)
	case "version":
		fmt.Println("roomgate", buildVersion())
	default:
		fmt.Fprintf(os.Stderr, "roomgate: unknown command %q\nusage: roomgate [serve|token|loadtest|version] [flags]\n", cmd)
		return 2
	}
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "roomgate:", err)
		}
		return 1
	}
	return 0
}

// buildVersion is Roomgate's version: set by -ldflags, or else the
// module's version in the build information, whether Roomgate is the main
// module (cmd/roomgate) or a dependency of an application's own binary;
// "dev" for a checkout or a replace by a directory.
func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	m := &bi.Main
	for _, d := range bi.Deps {
		if d.Path == modulePath {
			m = d
			break
		}
	}
	if m.Replace != nil {
		m = m.Replace // a directory has no version
	}
	if v := m.Version; v != "" && v != "(devel)" {
		return v
	}
	return "dev"
}
