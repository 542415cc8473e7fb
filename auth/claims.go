package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims is what a verified token says about its holder.
type Claims struct {
	Subject   string    // sub: the user id; never empty in a verified token
	Name      string    // name: the display name; may be empty
	Rooms     []string  // rooms: patterns "class/room", "class/*" or "*" (see Match)
	Admin     bool      // admin: may call the admin API, and joins any room
	Issuer    string    // iss
	Audience  []string  // aud
	ExpiresAt time.Time // exp; never zero in a verified token
	NotBefore time.Time // nbf; zero when absent
	IssuedAt  time.Time // iat; zero when absent

	// Extra is every other claim, as one JSON object with its keys sorted,
	// or nil when there is none. Roomgate hands it to the room class
	// untouched; it is never interpreted here.
	Extra []byte
}

// Covers reports whether the token lets its holder join room of class: an
// admin token covers every room, any other one the rooms its patterns
// match. A token without a rooms claim covers none.
func (c *Claims) Covers(class, room string) bool {
	if c.Admin {
		return true
	}
	for _, p := range c.Rooms {
		if Match(p, class, room) {
			return true
		}
	}
	return false
}

// Match reports whether pattern matches room of class. "*" matches every
// room, "class/*" every room of class, "class/room" that room only. Any
// other pattern matches nothing: a typo narrows what a token allows, it
// never widens it.
func Match(pattern, class, room string) bool {
	if pattern == "*" {
		return true
	}
	c, r, ok := strings.Cut(pattern, "/")
	if !ok || c != class || c == "" {
		return false
	}
	return r == "*" || r == room && r != ""
}

// registered names the claims Claims has a field for; all others are Extra.
var registered = []string{"admin", "aud", "exp", "iat", "iss", "name", "nbf", "rooms", "sub"}

// IsRegistered reports whether name is a claim Claims has a field for, and
// so cannot be an extra claim.
func IsRegistered(name string) bool { return slices.Contains(registered, name) }

// payload is Claims as the jwt package parses and signs it.
type payload struct {
	c             Claims
	exp, nbf, iat *jwt.NumericDate
}

var errNotObject = errors.New("auth: claims are not a JSON object")

// UnmarshalJSON decodes a token's claims strictly: a known claim of the
// wrong type fails the token rather than being read as absent.
func (p *payload) UnmarshalJSON(b []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return err
	}
	if fields == nil {
		return errNotObject
	}
	*p = payload{}
	var extra []string
	for k, v := range fields {
		var err error
		switch k {
		case "sub":
			err = json.Unmarshal(v, &p.c.Subject)
		case "name":
			err = json.Unmarshal(v, &p.c.Name)
		case "rooms":
			err = json.Unmarshal(v, &p.c.Rooms)
		case "admin":
			err = json.Unmarshal(v, &p.c.Admin)
		case "iss":
			err = json.Unmarshal(v, &p.c.Issuer)
		case "aud":
			var aud jwt.ClaimStrings
			err = json.Unmarshal(v, &aud)
			p.c.Audience = aud
		case "exp":
			err = json.Unmarshal(v, &p.exp)
		case "nbf":
			err = json.Unmarshal(v, &p.nbf)
		case "iat":
			err = json.Unmarshal(v, &p.iat)
		default:
			extra = append(extra, k)
		}
		if err != nil {
			return fmt.Errorf("auth: claim %q: %w", k, err)
		}
	}
	p.c.ExpiresAt, p.c.NotBefore, p.c.IssuedAt = timeOf(p.exp), timeOf(p.nbf), timeOf(p.iat)
	if len(extra) > 0 {
		slices.Sort(extra)
		var buf bytes.Buffer
		buf.WriteByte('{')
		for i, k := range extra {
			if i > 0 {
				buf.WriteByte(',')
			}
			key, _ := json.Marshal(k)
			buf.Write(key)
			buf.WriteByte(':')
			if err := json.Compact(&buf, fields[k]); err != nil {
				return fmt.Errorf("auth: claim %q: %w", k, err)
			}
		}
		buf.WriteByte('}')
		p.c.Extra = buf.Bytes()
	}
	return nil
}

// MarshalJSON renders the claims for signing: the registered ones that are
// set, then Extra's.
func (p *payload) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	if len(p.c.Extra) > 0 {
		var extra map[string]json.RawMessage
		if err := json.Unmarshal(p.c.Extra, &extra); err != nil || extra == nil {
			return nil, fmt.Errorf("auth: Extra must be a JSON object: %v", err)
		}
		for k, v := range extra {
			if IsRegistered(k) {
				return nil, fmt.Errorf("auth: %q in Extra is a registered claim; set its field", k)
			}
			m[k] = v
		}
	}
	set := func(k string, v any, ok bool) {
		if ok {
			m[k] = v
		}
	}
	set("sub", p.c.Subject, p.c.Subject != "")
	set("name", p.c.Name, p.c.Name != "")
	set("rooms", p.c.Rooms, p.c.Rooms != nil)
	set("admin", p.c.Admin, p.c.Admin)
	set("iss", p.c.Issuer, p.c.Issuer != "")
	set("aud", jwt.ClaimStrings(p.c.Audience), p.c.Audience != nil)
	set("exp", jwt.NewNumericDate(p.c.ExpiresAt), !p.c.ExpiresAt.IsZero())
	set("nbf", jwt.NewNumericDate(p.c.NotBefore), !p.c.NotBefore.IsZero())
	set("iat", jwt.NewNumericDate(p.c.IssuedAt), !p.c.IssuedAt.IsZero())
	// Extra goes out as it came in: json.Marshal would rewrite its < > &
	// as \u escapes, and a class comparing raw claims would see them change.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func timeOf(d *jwt.NumericDate) time.Time {
	if d == nil {
		return time.Time{}
	}
	return d.Time
}

// The jwt.Claims interface, for the parser's validator.
func (p *payload) GetExpirationTime() (*jwt.NumericDate, error) { return p.exp, nil }
func (p *payload) GetIssuedAt() (*jwt.NumericDate, error)       { return p.iat, nil }
func (p *payload) GetNotBefore() (*jwt.NumericDate, error)      { return p.nbf, nil }
func (p *payload) GetIssuer() (string, error)                   { return p.c.Issuer, nil }
func (p *payload) GetSubject() (string, error)                  { return p.c.Subject, nil }
func (p *payload) GetAudience() (jwt.ClaimStrings, error)       { return p.c.Audience, nil }
