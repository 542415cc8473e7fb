package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzVerify: whatever a client sends as a token, Verify returns claims or
// one of its three errors, and never panics; claims it returns have a
// subject, an expiry and well-formed extra claims.
func FuzzVerify(f *testing.F) {
	valid := mint(f, MintOptions{Secret: testSecret}, Claims{Subject: "a", Rooms: []string{"chat/*"},
		ExpiresAt: time.Unix(4102444800, 0), Extra: []byte(`{"role":"admin"}`)})
	f.Add(valid)
	f.Add(signRaw(f, `{"sub":"a","exp":4102444800,"nbf":1,"iat":1.5,"aud":["x"],"iss":"i","admin":true,"name":"A","x":{"y":[1,null]}}`))
	f.Add(signRaw(f, `{"sub":"a","exp":1e300}`))
	f.Add(signRaw(f, `{"sub":"a","exp":-1e300}`))
	f.Add(signRaw(f, `{"sub":"","exp":4102444800}`))
	f.Add(signRaw(f, `{"sub":"a","exp":"soon"}`))
	f.Add(signRaw(f, `null`))
	f.Add(signRaw(f, `{"sub":"a","exp":4102444800,"sub":"b"}`))
	f.Add(segment(f, []byte(`{"alg":"none"}`)) + "." + segment(f, []byte(`{"sub":"a","exp":4102444800}`)) + ".")
	f.Add(segment(f, []byte(`{"alg":"HS256","kid":7}`)) + "." + segment(f, []byte(`{}`)) + ".AA")
	f.Add("")
	f.Add("a.b.c")
	f.Add(strings.Repeat(".", 100))
	v := newVerifier(f, Options{Secret: testSecret})
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.Verify(tok)
		if err != nil {
			if !isTokenError(err) {
				t.Fatalf("Verify(%q) = %v: not one of ErrMissing, ErrInvalid, ErrExpired", tok, err)
			}
			return
		}
		if c.Subject == "" || c.ExpiresAt.IsZero() {
			t.Fatalf("Verify(%q) accepted %+v", tok, c)
		}
		checkExtra(t, c.Extra)
	})
}

// FuzzClaimsJSON: any claims JSON either fails to decode or decodes to
// claims that encode and decode to the same claims again.
func FuzzClaimsJSON(f *testing.F) {
	for _, s := range []string{
		`{"sub":"a","exp":4102444800}`,
		`{"sub":"a","name":"Ünïcode","rooms":["chat/*","*"],"admin":true,"iss":"i","aud":"x","exp":1,"nbf":2,"iat":3}`,
		`{"aud":["a","b"],"exp":1.999,"z":1,"a":{"b":[true,false,null]}, "m" : "\u00e9"}`,
		`{"exp":null,"rooms":null,"aud":null}`,
		`{"exp":-62135596800}`,
		`{"exp":1e30}`,
		`[]`, `null`, `{`, `{"rooms":[1]}`, `{"admin":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p payload
		if err := json.Unmarshal(b, &p); err != nil {
			return
		}
		checkExtra(t, p.c.Extra)
		enc, err := p.MarshalJSON()
		if err != nil {
			t.Fatalf("encode %+v: %v", p.c, err)
		}
		var q payload
		if err := json.Unmarshal(enc, &q); err != nil {
			t.Fatalf("decode %s: %v", enc, err)
		}
		if !sameClaims(p.c, q.c) {
			t.Fatalf("%s: decoded %+v, re-decoded %+v from %s", b, p.c, q.c, enc)
		}
	})
}

// FuzzMatch: a pattern matches only in the three ways the contract names.
func FuzzMatch(f *testing.F) {
	for _, s := range [][3]string{{"*", "chat", "x"}, {"chat/*", "chat", "x"}, {"chat/x", "chat", "x"}, {"chat/x", "chat", "y"},
		{"*/x", "chat", "x"}, {"chat/", "chat", ""}, {"/", "", ""}, {"chat/x/y", "chat", "x/y"}, {"", "", ""}} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, pattern, class, room string) {
		got := Match(pattern, class, room)
		want := pattern == "*" || class != "" && (pattern == class+"/*" || room != "" && pattern == class+"/"+room)
		if got != want {
			t.Fatalf("Match(%q, %q, %q) = %v, want %v", pattern, class, room, got, want)
		}
	})
}

func isTokenError(err error) bool {
	for _, e := range []error{ErrMissing, ErrInvalid, ErrExpired} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func checkExtra(t *testing.T, extra []byte) {
	t.Helper()
	if extra == nil {
		return
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(extra, &m); err != nil || len(m) == 0 {
		t.Fatalf("Extra %q is not a non-empty JSON object: %v", extra, err)
	}
	for k := range m {
		if IsRegistered(k) {
			t.Fatalf("Extra %q holds registered claim %q", extra, k)
		}
	}
}

func sameClaims(a, b Claims) bool {
	return a.Subject == b.Subject && a.Name == b.Name && strings.Join(a.Rooms, "\x00") == strings.Join(b.Rooms, "\x00") &&
		(a.Rooms == nil) == (b.Rooms == nil) && a.Admin == b.Admin && a.Issuer == b.Issuer &&
		strings.Join(a.Audience, "\x00") == strings.Join(b.Audience, "\x00") && (a.Audience == nil) == (b.Audience == nil) &&
		a.ExpiresAt.Equal(b.ExpiresAt) && a.NotBefore.Equal(b.NotBefore) && a.IssuedAt.Equal(b.IssuedAt) &&
		bytes.Equal(a.Extra, b.Extra)
}
