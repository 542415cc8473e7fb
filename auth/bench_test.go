package auth

import "testing"

// BenchmarkVerify is the cost a token adds to a handshake.
func BenchmarkVerify(b *testing.B) {
	es := newKey(b, "ES256")
	for _, bc := range []struct {
		name string
		mint MintOptions
		o    Options
	}{
		{"HS256", MintOptions{Secret: testSecret}, Options{Secret: testSecret}},
		{"ES256", MintOptions{PrivateKey: es.priv}, Options{PublicKeyPEM: es.pem}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			v := newVerifier(b, bc.o)
			c := claims()
			c.Extra = []byte(`{"role":"member"}`)
			tok := mint(b, bc.mint, c)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
