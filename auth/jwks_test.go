package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/roomgate/roomgate/internal/testkit"
)

// jwksServer serves a JWKS whose keys the test replaces, counting fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	body    []byte
	fetches atomic.Int32
}

func startJWKS(tb testing.TB) *jwksServer {
	tb.Helper()
	js := &jwksServer{}
	js.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		js.fetches.Add(1)
		js.mu.Lock()
		defer js.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(js.body)
	}))
	tb.Cleanup(js.Close)
	return js
}

// serve makes the set hold exactly keys, named by their map key as kid.
func (js *jwksServer) serve(tb testing.TB, keys map[string]testKey) {
	tb.Helper()
	st := jwkset.NewMemoryStorage()
	for kid, k := range keys {
		jwk, err := jwkset.NewJWKFromKey(k.priv.Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: jwkset.ALG(k.name), USE: jwkset.UseSig},
		})
		if err != nil {
			tb.Fatal(err)
		}
		if err := st.KeyWrite(context.Background(), jwk); err != nil {
			tb.Fatal(err)
		}
	}
	b, err := st.JSONPublic(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	js.mu.Lock()
	js.body = b
	js.mu.Unlock()
}

// run runs v until the test ends, and checks that Run returns.
func run(tb testing.TB, v *Verifier) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			tb.Error("Run did not return within 5s of cancel")
		}
	})
}

// TestJWKSRotation: keys come from the set by kid; a key the issuer starts
// signing with is fetched when a token names it, and a key it withdraws
// stops verifying.
func TestJWKSRotation(t *testing.T) {
	js := startJWKS(t)
	a, b := newKey(t, "ES256"), newKey(t, "RS256")
	js.serve(t, map[string]testKey{"a": a})
	v := newVerifier(t, Options{JWKSURL: js.URL, JWKSRefresh: time.Hour, JWKSMinRefresh: 50 * time.Millisecond})
	if v.Ready() == nil {
		t.Fatal("ready before the keys were fetched")
	}
	tokA := mint(t, MintOptions{PrivateKey: a.priv, KeyID: "a"}, claims())
	expect(t, v, tokA, ErrInvalid) // Run has not fetched yet
	run(t, v)
	testkit.Eventually(t, 5*time.Second, func() error {
		if err := v.Ready(); err != nil {
			return err
		}
		_, err := v.Verify(tokA)
		return err
	})

	// A token without a kid is checked against every key of its algorithm.
	if _, err := v.Verify(mint(t, MintOptions{PrivateKey: a.priv}, claims())); err != nil {
		t.Fatalf("no kid: %v", err)
	}
	// A kid that names another key does not verify.
	expect(t, v, mint(t, MintOptions{PrivateKey: newKey(t, "ES256").priv, KeyID: "a"}, claims()), ErrInvalid)
	// HMAC is never verified against a JWKS, whatever the kid.
	expect(t, v, mint(t, MintOptions{Secret: testSecret, KeyID: "a"}, claims()), ErrInvalid)

	// Rotation: the set now holds b only.
	js.serve(t, map[string]testKey{"b": b})
	tokB := mint(t, MintOptions{PrivateKey: b.priv, KeyID: "b"}, claims())
	testkit.Eventually(t, 5*time.Second, func() error {
		_, err := v.Verify(tokB)
		return err
	})
	expect(t, v, tokA, ErrInvalid)
	expired := claims()
	expired.ExpiresAt = time.Now().Add(-time.Hour)
	expect(t, v, mint(t, MintOptions{PrivateKey: b.priv, KeyID: "b"}, expired), ErrExpired)

	// Unknown kids do not make a fetch each: at most one per JWKSMinRefresh.
	before := js.fetches.Load()
	start := time.Now()
	for i := range 200 {
		v.Verify(mint(t, MintOptions{PrivateKey: b.priv, KeyID: fmt.Sprint("nope-", i)}, claims()))
	}
	// The last kicks may have left a fetch pending. One more unknown kid
	// makes sure one is, and waiting for it counts every fetch the loop
	// asked for.
	after := js.fetches.Load()
	v.Verify(mint(t, MintOptions{PrivateKey: b.priv, KeyID: "nope-last"}, claims()))
	testkit.WaitFor(t, 5*time.Second, "the fetch the last unknown kid asked for", func() bool { return js.fetches.Load() > after })
	if n, most := js.fetches.Load()-before, int32(time.Since(start)/(50*time.Millisecond))+2; n > most {
		t.Fatalf("%d fetches in %v for unknown kids, want at most %d", n, time.Since(start), most)
	}
}

// TestJWKSOutage: a set that cannot be fetched keeps the keys known, and a
// node that never had any says it is not ready.
func TestJWKSOutage(t *testing.T) {
	js := startJWKS(t)
	a := newKey(t, "EdDSA")
	js.serve(t, map[string]testKey{"a": a})
	v := newVerifier(t, Options{JWKSURL: js.URL, JWKSRefresh: 20 * time.Millisecond, JWKSMinRefresh: 10 * time.Millisecond})
	run(t, v)
	tok := mint(t, MintOptions{PrivateKey: a.priv, KeyID: "a"}, claims())
	testkit.Eventually(t, 5*time.Second, func() error { _, err := v.Verify(tok); return err })
	js.mu.Lock()
	js.body = []byte("<html>down for maintenance</html>")
	js.mu.Unlock()
	n := js.fetches.Load()
	testkit.Eventually(t, 5*time.Second, func() error {
		if js.fetches.Load() < n+3 {
			return errors.New("no refetch yet")
		}
		return nil
	})
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("after failed fetches: %v", err)
	}

	// A node whose every fetch fails. Run fetches one at a time, so once
	// the second request arrives the first one's failure has been handled.
	down := startJWKS(t)
	down.body = []byte("<html>down for maintenance</html>")
	never := newVerifier(t, Options{JWKSURL: down.URL, JWKSMinRefresh: 10 * time.Millisecond})
	run(t, never)
	testkit.WaitFor(t, 5*time.Second, "a second fetch after a failed one", func() bool { return down.fetches.Load() >= 2 })
	if never.Ready() == nil {
		t.Fatal("ready without a key")
	}
}
