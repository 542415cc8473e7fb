package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/roomgate/roomgate/auth"
)

// BenchmarkHandshake opens and closes one socket per iteration, through
// the whole admission, against a node with no key, an HS256 secret and an
// ES256 public key, in one run: what token verification costs a handshake.
func BenchmarkHandshake(b *testing.B) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	claims := auth.Claims{Subject: "bench", Rooms: []string{"echo/*"}, ExpiresAt: time.Now().Add(time.Hour)}
	for _, tc := range []struct {
		name     string
		verifier auth.Options
		mint     auth.MintOptions
	}{
		{"none", auth.Options{}, auth.MintOptions{}},
		{"HS256", auth.Options{Secret: authSecret}, auth.MintOptions{Secret: authSecret}},
		{"ES256", auth.Options{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})}, auth.MintOptions{PrivateKey: ecKey}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var o Options
			header := http.Header{}
			if tc.name != "none" {
				v, err := auth.New(tc.verifier)
				if err != nil {
					b.Fatal(err)
				}
				o.Auth = v
				tok, err := auth.Mint(tc.mint, claims)
				if err != nil {
					b.Fatal(err)
				}
				header.Set("Authorization", "Bearer "+tok)
			}
			ts := startServer(b, o)
			d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(header)}
			b.ReportAllocs()
			for b.Loop() {
				c, _, _, err := d.Dial(context.Background(), ts.url+"/ws/echo/bench")
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		})
	}
}
