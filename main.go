// Package roomgate runs the Roomgate gateway. It only wires packages
// together: flags and environment in, servers out.
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

// version is set at build time with
// -ldflags "-X github.com/roomgate/roomgate.version=v1.2.3".
var version = ""

// Main is the roomgate command: it parses os.Args and exits.
func Main() {
	loadtest.ServeWorker() // a worker process of a distributed load run exits here
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "loadtest":
		err = runLoadtest(args)
	case "token":
		err = runToken(args)
	case "version":
		fmt.Println("roomgate", buildVersion())
	default:
		fmt.Fprintf(os.Stderr, "roomgate: unknown command %q\nusage: roomgate [serve|token|loadtest|version] [flags]\n", cmd)
		os.Exit(2)
	}
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "roomgate:", err)
		}
		os.Exit(1)
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
