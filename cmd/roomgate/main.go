// Command roomgate runs the Roomgate gateway with the built-in classes.
package main

import "github.com/roomgate/roomgate"

func main() {
	roomgate.Main()
}
