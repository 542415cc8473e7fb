package hibernation

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/roomgate/roomgate/storage"
)

// Member is one socket of a room as it is persisted: enough for a woken
// instance to hand the room the same socket it knew before.
type Member struct {
	ID          uint64
	Edge        string // id of the node that holds the socket
	UserID      string
	UserName    string
	Query       string
	ConnectedAt int64 // Unix nanoseconds
	Tags        []string
	Attachment  []byte
	Claims      []byte // the token's extra claims, a JSON object; nil for none
}

// ErrCorrupt is returned for a membership record that does not decode.
var ErrCorrupt = errors.New("hibernation: corrupt membership record")

// The record's first byte says its layout. Format 2 is format 1 followed
// by the token's claims; a record without claims is still written as
// format 1, byte for byte what an older node writes and reads.
const (
	format       = 1
	formatClaims = 2
)

// Encode renders m as a record for storage.Member.Data. The id is the
// storage key, not part of the record.
func (m *Member) Encode() []byte {
	n := 1 + binary.MaxVarintLen64 + 6*binary.MaxVarintLen32 + len(m.Edge) + len(m.UserID) + len(m.UserName) + len(m.Query) + len(m.Attachment) + len(m.Claims)
	for _, t := range m.Tags {
		n += binary.MaxVarintLen32 + len(t)
	}
	b := make([]byte, 0, n)
	if len(m.Claims) > 0 {
		b = append(b, formatClaims)
	} else {
		b = append(b, format)
	}
	b = binary.AppendVarint(b, m.ConnectedAt)
	for _, s := range []string{m.Edge, m.UserID, m.UserName, m.Query} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(m.Tags)))
	for _, t := range m.Tags {
		b = binary.AppendUvarint(b, uint64(len(t)))
		b = append(b, t...)
	}
	b = binary.AppendUvarint(b, uint64(len(m.Attachment)))
	b = append(b, m.Attachment...)
	if len(m.Claims) > 0 {
		b = binary.AppendUvarint(b, uint64(len(m.Claims)))
		b = append(b, m.Claims...)
	}
	return b
}

// Decode parses a record written by Encode for the socket id. Records come
// from storage that another process may have written, so every length is
// checked against what is left: a bad record is an error, never a panic or
// a huge allocation.
func Decode(id uint64, b []byte) (Member, error) {
	d := decoder{b: b}
	m := Member{ID: id}
	if len(b) == 0 || b[0] != format && b[0] != formatClaims {
		return Member{}, fmt.Errorf("%w: unknown format", ErrCorrupt)
	}
	d.b = d.b[1:]
	m.ConnectedAt = d.varint()
	m.Edge, m.UserID, m.UserName, m.Query = d.str(), d.str(), d.str(), d.str()
	if n := d.uvarint(); n > 0 && d.err == nil {
		if n > uint64(len(d.b)) { // each tag takes at least one byte
			return Member{}, fmt.Errorf("%w: %d tags in %d bytes", ErrCorrupt, n, len(d.b))
		}
		m.Tags = make([]string, n)
		for i := range m.Tags {
			m.Tags[i] = d.str()
		}
	}
	if a := d.bytes(); len(a) > 0 {
		m.Attachment = append([]byte(nil), a...)
	}
	if b[0] == formatClaims {
		if c := d.bytes(); len(c) > 0 {
			m.Claims = append([]byte(nil), c...)
		} else if d.err == nil {
			d.err = fmt.Errorf("%w: empty claims in format 2", ErrCorrupt)
		}
	}
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	if d.err != nil {
		return Member{}, d.err
	}
	return m, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", ErrCorrupt, what)
	}
	d.b = nil
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("integer")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("length")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string { return string(d.bytes()) }

// Load reads and decodes the members of room r. A record that does not
// decode is returned in bad rather than failing the room: its socket is
// then treated as gone.
func Load(ctx context.Context, s storage.Store, r storage.Room) (members []Member, bad []uint64, err error) {
	recs, err := s.Members(ctx, r)
	if err != nil {
		return nil, nil, fmt.Errorf("hibernation: load members of %s: %w", r, err)
	}
	members = make([]Member, 0, len(recs))
	for _, rec := range recs {
		m, err := Decode(rec.ID, rec.Data)
		if err != nil {
			bad = append(bad, rec.ID)
			continue
		}
		members = append(members, m)
	}
	return members, bad, nil
}
