package rooms

import "github.com/roomgate/roomgate/rooms/internal/linknet"

// The TCP handshake's names, as the tests that speak it by hand call them.
const (
	linkProtocol   = linknet.Protocol
	hdrNode        = linknet.HeaderNode
	hdrIncarnation = linknet.HeaderIncarnation
	hdrSecret      = linknet.HeaderSecret
)
