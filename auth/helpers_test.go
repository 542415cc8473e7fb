package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testSecret is an HS256 secret long enough for New.
var testSecret = []byte("0123456789abcdef0123456789abcdef")

// A key kind the tests cover: its private key and the PEM of its public key.
type testKey struct {
	name string
	priv crypto.Signer
	pem  []byte
}

func newKey(tb testing.TB, kind string) testKey {
	tb.Helper()
	var priv crypto.Signer
	var err error
	switch kind {
	case "RS256":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		tb.Fatalf("no key kind %q", kind)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return testKey{kind, priv, publicPEM(tb, priv.Public())}
}

func publicPEM(tb testing.TB, pub crypto.PublicKey) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func privatePEM(tb testing.TB, priv crypto.Signer) []byte {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// claims are a valid token's claims, an hour long.
func claims() Claims {
	return Claims{Subject: "alice", Name: "Alice", Rooms: []string{"chat/*"}, ExpiresAt: time.Now().Add(time.Hour)}
}

func mint(tb testing.TB, o MintOptions, c Claims) string {
	tb.Helper()
	tok, err := Mint(o, c)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

func newVerifier(tb testing.TB, o Options) *Verifier {
	tb.Helper()
	v, err := New(o)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// expect checks that Verify refuses tok with an error wrapping want.
func expect(tb testing.TB, v *Verifier, tok string, want error) {
	tb.Helper()
	c, err := v.Verify(tok)
	if !errors.Is(err, want) {
		tb.Errorf("Verify = %+v, %v; want an error wrapping %q", c, err, want)
	}
}
