package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsOnlyStandardLibrary holds DESIGN §2: client imports no server
// package, nor anything else outside the standard library, so a backend
// that uses it links none of the server.
func TestImportsOnlyStandardLibrary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}",
		"github.com/roomgate/roomgate/client").Output()
	if err != nil {
		t.Fatal(err)
	}
	if deps := strings.Fields(string(out)); len(deps) != 1 || deps[0] != "github.com/roomgate/roomgate/client" {
		t.Errorf("client depends on %v, want the standard library only", deps)
	}
}
