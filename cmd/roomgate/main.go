// Command roomgate runs the Roomgate gateway with the built-in classes:
// echo, counter, chat and canvas. An application's own binary is this
// file with its classes added (see package roomgate).
package main

import "github.com/roomgate/roomgate"

func main() {
	roomgate.Main(roomgate.Builtins())
}
