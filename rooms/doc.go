// Package rooms owns room classes and the seam the gateway talks to.
//
// The gateway holds a Router and never parses a room's messages: it hands each
// complete client message to Router.Message and writes whatever the room sends
// through the Socket it was given. Everything a room needs from a socket is in
// the Socket interface, so a room never sees file descriptors, frames or buffers.
//
// Router methods are called concurrently from many gateway workers; a Router
// must be safe for that. Calls for one socket never overlap and arrive in the
// order its frames were read (DESIGN §3.3): Connect first, then every Message,
// then Closed exactly once.
package rooms
