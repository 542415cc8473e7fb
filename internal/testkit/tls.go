package testkit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// SelfSignedCert makes a certificate for 127.0.0.1 and localhost, valid
// for a day and signed by its own ECDSA key, with name as its common name
// (so a test can tell two apart). It returns both as PEM, as a server's
// -tls-cert and -tls-key files hold them.
func SelfSignedCert(tb testing.TB, name string) (certPEM, keyPEM []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // its own root, so a client can trust exactly it
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// TrustOnly is a client TLS config that trusts the certificates in
// certPEMs and nothing else.
func TrustOnly(tb testing.TB, certPEMs ...[]byte) *tls.Config {
	tb.Helper()
	pool := x509.NewCertPool()
	for _, c := range certPEMs {
		if !pool.AppendCertsFromPEM(c) {
			tb.Fatal("testkit: no certificate in PEM")
		}
	}
	return &tls.Config{RootCAs: pool}
}

// DialTLS opens a WebSocket to url (wss://host:port/path) with config,
// closed when the test ends. It returns the server's certificate too.
func DialTLS(tb testing.TB, url string, config *tls.Config) (net.Conn, *x509.Certificate) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioWait)
	defer cancel()
	d := ws.Dialer{TLSConfig: config}
	c, br, _, err := d.Dial(ctx, url)
	if err != nil {
		tb.Fatalf("dial %s: %v", url, err)
	}
	peer := c.(*tls.Conn).ConnectionState().PeerCertificates[0]
	if br != nil {
		c = &bufferedConn{Conn: c, r: br}
	}
	tb.Cleanup(func() { c.Close() })
	return c, peer
}
