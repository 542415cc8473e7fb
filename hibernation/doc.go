// Package hibernation is what lets a room leave memory while its sockets
// stay open. It owns the decisions; the room runtime (package rooms) owns
// the rooms and carries them out.
//
//   - Policy: when a room is idle (After), and how many rooms to evict
//     when more than MaxActive are in memory, least recently used first.
//   - Sweeper: the loop that applies the Policy (a tick every quarter of
//     After, and a sweep soon after Added reports the cap passed), the
//     decision for each room (a parked room with unsaved membership
//     records is asked to save them first, at most 1,024 a sweep, and
//     goes on a later sweep), and WakeLost, the start-up pass that wakes
//     the rooms whose sockets died with the last run, a bounded number at
//     once.
//   - Member, Encode, Decode, Load: the persisted membership record of
//     each socket (its user, tags and attachment), saved before its room
//     leaves memory (in a cluster, with the event that changed it) and
//     loaded when the room wakes, on this node or later on another.
//   - Unsaved: a room's list of sockets whose record awaits a save.
//
// The runtime implements Rooms, through which the Sweeper visits the rooms
// in memory under the runtime's own shard locks, evicts them, asks them to
// save and wakes them; this package imports no part of the runtime. Which
// socket a loaded record stands for (open here, on another live node, or
// lost) is the runtime's to decide when a room wakes.
//
// Policy and the record functions keep no state and are safe for
// concurrent use. A Sweeper runs one Run loop; Added and WakeLost may be
// called beside it. An Unsaved list belongs to its room's goroutine.
package hibernation
