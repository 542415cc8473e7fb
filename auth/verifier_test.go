package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestEachAlgorithm: a token signed with each kind of key verifies with
// that key only; altered or signed by another key of the same kind, it is
// refused.
func TestEachAlgorithm(t *testing.T) {
	type setup struct {
		name   string
		mint   MintOptions
		other  MintOptions // a different key of the same kind
		verify Options
	}
	setups := []setup{{
		name:   "HS256",
		mint:   MintOptions{Secret: testSecret},
		other:  MintOptions{Secret: []byte(strings.Repeat("z", 32))},
		verify: Options{Secret: testSecret},
	}}
	for _, kind := range []string{"RS256", "ES256", "EdDSA"} {
		k, k2 := newKey(t, kind), newKey(t, kind)
		setups = append(setups, setup{kind, MintOptions{PrivateKey: k.priv}, MintOptions{PrivateKey: k2.priv}, Options{PublicKeyPEM: k.pem}})
	}
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			v := newVerifier(t, s.verify)
			want := claims()
			want.Extra = []byte(`{"plan":"pro","role":"admin"}`)
			tok := mint(t, s.mint, want)
			if alg := header(t, tok)["alg"]; alg != s.name {
				t.Fatalf("minted with alg %v, want %s", alg, s.name)
			}
			got, err := v.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Subject != "alice" || got.Name != "Alice" || strings.Join(got.Rooms, ",") != "chat/*" ||
				string(got.Extra) != string(want.Extra) || got.ExpiresAt.Unix() != want.ExpiresAt.Unix() || got.IssuedAt.IsZero() {
				t.Fatalf("claims = %+v, want %+v", got, want)
			}

			parts := strings.Split(tok, ".")
			other := claims()
			other.Subject = "mallory"
			forged := parts[0] + "." + segment(t, mustJSON(t, &payload{c: other})) + "." + parts[2]
			expect(t, v, forged, ErrInvalid)
			sig := []byte(parts[2])
			sig[len(sig)/2] ^= 1
			expect(t, v, parts[0]+"."+parts[1]+"."+string(sig), ErrInvalid)
			expect(t, v, mint(t, s.other, want), ErrInvalid)
		})
	}
}

// TestAlgNoneAndConfusion: a token cannot choose how it is checked.
func TestAlgNoneAndConfusion(t *testing.T) {
	rsaKey := newKey(t, "RS256")
	for _, o := range []Options{{Secret: testSecret}, {PublicKeyPEM: rsaKey.pem}, {Secret: testSecret, PublicKeyPEM: rsaKey.pem}} {
		v := newVerifier(t, o)
		none, err := jwt.NewWithClaims(jwt.SigningMethodNone, &payload{c: claims()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		expect(t, v, none, ErrInvalid)
		// The classic confusion: the RSA public key, which is public, used
		// as an HMAC secret.
		confused, err := jwt.NewWithClaims(jwt.SigningMethodHS256, &payload{c: claims()}).SignedString(rsaKey.pem)
		if err != nil {
			t.Fatal(err)
		}
		expect(t, v, confused, ErrInvalid)
	}
	// An ES256 token against an RSA key, and an RS384 one that the RSA key
	// does allow.
	v := newVerifier(t, Options{PublicKeyPEM: rsaKey.pem})
	expect(t, v, mint(t, MintOptions{PrivateKey: newKey(t, "ES256").priv}, claims()), ErrInvalid)
	rs384, err := jwt.NewWithClaims(jwt.SigningMethodRS384, &payload{c: claims()}).SignedString(rsaKey.priv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(rs384); err != nil {
		t.Fatalf("RS384 with an RSA key: %v", err)
	}
}

func TestTimesIssuerAudience(t *testing.T) {
	v := newVerifier(t, Options{Secret: testSecret, Issuer: "https://id.example", Audience: "roomgate", Leeway: 2 * time.Second})
	good := func() Claims {
		c := claims()
		c.Issuer, c.Audience = "https://id.example", []string{"other", "roomgate"}
		return c
	}
	with := func(f func(c *Claims)) string {
		c := good()
		f(&c)
		return mint(t, MintOptions{Secret: testSecret}, c)
	}
	now := time.Now()
	for _, tc := range []struct {
		name string
		tok  string
		want error // nil: valid
	}{
		{"valid", with(func(c *Claims) {}), nil},
		{"expired", with(func(c *Claims) { c.ExpiresAt = now.Add(-time.Minute) }), ErrExpired},
		{"expired within the leeway", with(func(c *Claims) { c.ExpiresAt = now.Add(-time.Second) }), nil},
		{"not yet valid", with(func(c *Claims) { c.NotBefore = now.Add(time.Minute) }), ErrInvalid},
		{"issued in the future", with(func(c *Claims) { c.IssuedAt = now.Add(time.Minute) }), ErrInvalid},
		{"wrong issuer", with(func(c *Claims) { c.Issuer = "https://evil.example" }), ErrInvalid},
		{"no issuer", with(func(c *Claims) { c.Issuer = "" }), ErrInvalid},
		{"wrong audience", with(func(c *Claims) { c.Audience = []string{"other"} }), ErrInvalid},
		{"expired and wrong audience", with(func(c *Claims) { c.Audience, c.ExpiresAt = nil, now.Add(-time.Hour) }), ErrInvalid},
		{"no exp", signRaw(t, `{"sub":"a","iss":"https://id.example","aud":"roomgate"}`), ErrInvalid},
		{"no sub", signRaw(t, `{"exp":4102444800,"iss":"https://id.example","aud":"roomgate"}`), ErrInvalid},
		{"admin of the wrong type", signRaw(t, `{"sub":"a","exp":4102444800,"iss":"https://id.example","aud":"roomgate","admin":"yes"}`), ErrInvalid},
		{"rooms of the wrong type", signRaw(t, `{"sub":"a","exp":4102444800,"iss":"https://id.example","aud":"roomgate","rooms":"chat/*"}`), ErrInvalid},
		{"claims not an object", signRaw(t, `["sub"]`), ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(tc.tok)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %+v, %v; want %v", c, err, tc.want)
			}
			if errors.Is(err, ErrExpired) && errors.Is(err, ErrInvalid) {
				t.Fatalf("%v is both expired and invalid", err)
			}
		})
	}
}

// signRaw signs a payload given as JSON with testSecret.
func signRaw(tb testing.TB, payloadJSON string) string {
	tb.Helper()
	head := segment(tb, []byte(`{"alg":"HS256","typ":"JWT"}`))
	body := segment(tb, []byte(payloadJSON))
	sig, err := jwt.SigningMethodHS256.Sign(head+"."+body, testSecret)
	if err != nil {
		tb.Fatal(err)
	}
	return head + "." + body + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestGarbageAndMessages(t *testing.T) {
	v := newVerifier(t, Options{Secret: testSecret})
	expect(t, v, "", ErrMissing)
	for _, tok := range []string{"x", "a.b", "a.b.c", "....", "\x00.\xff.", strings.Repeat("a", MaxTokenBytes+1),
		segment(t, []byte(`{"alg":"HS256"}`)) + ".!!!.sig"} {
		expect(t, v, tok, ErrInvalid)
	}
	// The message names the fault, never what the client sent.
	hostile := `{"alg":"HS256","kid":"<script>secret-kid</script>"}`
	tok := segment(t, []byte(hostile)) + "." + segment(t, []byte(`{"sub":"a"}`)) + ".c2ln"
	if _, err := v.Verify(tok); err == nil || strings.Contains(err.Error(), "secret-kid") || strings.Contains(err.Error(), tok) {
		t.Fatalf("error %v quotes the token", err)
	}
}

func TestExtraClaims(t *testing.T) {
	v := newVerifier(t, Options{Secret: testSecret})
	c, err := v.Verify(signRaw(t, `{"sub":"a","exp":4102444800,"role":"admin","jti":"x1", "n": [1, 2 ,3],"admin":false}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"jti":"x1","n":[1,2,3],"role":"admin"}`; string(c.Extra) != want {
		t.Fatalf("Extra = %s, want %s", c.Extra, want)
	}
	c, _ = v.Verify(signRaw(t, `{"sub":"a","exp":4102444800}`))
	if c.Extra != nil {
		t.Fatalf("no extra claims, but Extra = %q", c.Extra)
	}
	if _, err := Mint(MintOptions{Secret: testSecret}, Claims{Subject: "a", ExpiresAt: time.Now().Add(time.Hour), Extra: []byte(`{"sub":"b"}`)}); err == nil {
		t.Fatal("Mint let Extra override sub")
	}
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		rooms       []string
		admin       bool
		class, room string
		want        bool
	}{
		{[]string{"chat/lobby"}, false, "chat", "lobby", true},
		{[]string{"chat/lobby"}, false, "chat", "lobby2", false},
		{[]string{"chat/*"}, false, "chat", "anything", true},
		{[]string{"chat/*"}, false, "canvas", "anything", false},
		{[]string{"*"}, false, "canvas", "x", true},
		{[]string{"canvas/x", "chat/*"}, false, "chat", "y", true},
		{nil, false, "chat", "x", false},
		{nil, true, "chat", "x", true},
		{[]string{"*/x", "chat/l*", "chat", "chat/", "/x", "chat/x/y", ""}, false, "chat", "x", false},
		{[]string{"chat/l*"}, false, "chat", "lobby", false},
	} {
		c := Claims{Rooms: tc.rooms, Admin: tc.admin}
		if got := c.Covers(tc.class, tc.room); got != tc.want {
			t.Errorf("%q admin=%v covers %s/%s = %v, want %v", tc.rooms, tc.admin, tc.class, tc.room, got, tc.want)
		}
	}
}

func TestOptionErrors(t *testing.T) {
	rsa1024 := mustRSA1024(t)
	for _, tc := range []struct {
		name  string
		o     Options
		field string
	}{
		{"no key", Options{Issuer: "x"}, "Secret"},
		{"short secret", Options{Secret: []byte("hunter2")}, "Secret"},
		{"not PEM", Options{PublicKeyPEM: []byte("ssh-ed25519 AAAA")}, "PublicKeyPEM"},
		{"a private key", Options{PublicKeyPEM: privatePEM(t, newKey(t, "ES256").priv)}, "PublicKeyPEM"},
		{"a small RSA key", Options{PublicKeyPEM: rsa1024}, "PublicKeyPEM"},
		{"JWKS in clear", Options{JWKSURL: "http://id.example/jwks.json"}, "JWKSURL"},
		{"JWKS not a URL", Options{JWKSURL: "jwks.json"}, "JWKSURL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.o)
			var oe *OptionError
			if !errors.As(err, &oe) || oe.Field != tc.field {
				t.Fatalf("New = %v, want an OptionError for %s", err, tc.field)
			}
		})
	}
	for _, u := range []string{"https://id.example/jwks.json", "http://127.0.0.1:9/jwks", "http://localhost/jwks", "http://[::1]:8/k"} {
		if _, err := New(Options{JWKSURL: u}); err != nil {
			t.Errorf("JWKS URL %s: %v", u, err)
		}
	}
}

func mustRSA1024(tb testing.TB) []byte {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		tb.Fatal(err)
	}
	return publicPEM(tb, k.Public())
}

func TestPublicKeyFormats(t *testing.T) {
	k := newKey(t, "RS256")
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(k.priv.Public().(*rsa.PublicKey))})
	v := newVerifier(t, Options{PublicKeyPEM: pkcs1})
	if _, err := v.Verify(mint(t, MintOptions{PrivateKey: k.priv}, claims())); err != nil {
		t.Fatalf("PKCS #1 public key: %v", err)
	}
	parsed, err := ParsePrivateKeyPEM(privatePEM(t, k.priv))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(mint(t, MintOptions{PrivateKey: parsed}, claims())); err != nil {
		t.Fatalf("a private key read from PEM: %v", err)
	}
}

func TestMintErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    MintOptions
		c    Claims
	}{
		{"no key", MintOptions{}, claims()},
		{"both keys", MintOptions{Secret: testSecret, PrivateKey: newKey(t, "EdDSA").priv}, claims()},
		{"short secret", MintOptions{Secret: []byte("x")}, claims()},
		{"no subject", MintOptions{Secret: testSecret}, Claims{ExpiresAt: time.Now().Add(time.Hour)}},
		{"no expiry", MintOptions{Secret: testSecret}, Claims{Subject: "a"}},
		{"extra not an object", MintOptions{Secret: testSecret}, Claims{Subject: "a", ExpiresAt: time.Now().Add(time.Hour), Extra: []byte(`[1]`)}},
	} {
		if tok, err := Mint(tc.o, tc.c); err == nil {
			t.Errorf("%s: minted %s", tc.name, tok)
		}
	}
}

func header(tb testing.TB, tok string) map[string]any {
	tb.Helper()
	p := jwt.NewParser()
	t, _, err := p.ParseUnverified(tok, &payload{})
	if err != nil {
		tb.Fatal(err)
	}
	return t.Header
}

func segment(tb testing.TB, b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustJSON(tb testing.TB, p *payload) []byte {
	tb.Helper()
	b, err := p.MarshalJSON()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
