package roomgate

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/roomgate/roomgate/auth"
	"github.com/roomgate/roomgate/rooms"
)

// runToken is `roomgate token`: it mints a client token and prints it.
func runToken(args []string) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	sub := fs.String("sub", "", "the user id (required)")
	name := fs.String("name", "", "the user's display name")
	roomList := fs.String("rooms", "", "comma-separated room patterns the token covers: class/room, class/* or *")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	admin := fs.Bool("admin", false, "an admin token: the admin API, and every room")
	secret := fs.String("jwt-secret", "", "HS256 secret to sign with (the node's -jwt-secret)")
	privateKey := fs.String("jwt-private-key", "", "PEM file of the private key to sign with: RSA (RS256), ECDSA (ES256/384/512) or Ed25519 (EdDSA)")
	kid := fs.String("kid", "", "the kid header: which key of a JWKS signs")
	issuer := fs.String("jwt-issuer", "", "the iss claim")
	audience := fs.String("jwt-audience", "", "the aud claim")
	extra := map[string]any{}
	fs.Func("claim", "an extra claim for the room class, key=value (a string); repeatable", func(s string) error {
		k, v, err := claimFlag(s)
		if err == nil {
			extra[k] = v
		}
		return err
	})
	fs.Func("claim-json", "an extra claim whose value is JSON, key=json (a number, bool, list or object); repeatable", func(s string) error {
		k, v, err := claimFlag(s)
		if err == nil && !json.Valid([]byte(v)) {
			err = fmt.Errorf("the value of %q is not JSON", k)
		}
		if err == nil {
			extra[k] = json.RawMessage(v)
		}
		return err
	})
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *sub == "":
		return errors.New("-sub is required")
	case *ttl <= 0:
		return errors.New("-ttl must be positive")
	case (*secret == "") == (*privateKey == ""):
		return errors.New("sign with -jwt-secret (or ROOMGATE_JWT_SECRET) or -jwt-private-key, one of them")
	}
	c := auth.Claims{Subject: *sub, Name: *name, Admin: *admin, Issuer: *issuer, ExpiresAt: time.Now().Add(*ttl)}
	if *audience != "" {
		c.Audience = []string{*audience}
	}
	for _, p := range splitList(*roomList) {
		if !validPattern(p) {
			return fmt.Errorf("-rooms: %q is not class/room, class/* or *", p)
		}
		c.Rooms = append(c.Rooms, p)
	}
	if len(extra) > 0 {
		c.Extra, _ = json.Marshal(extra)
	}
	var o auth.MintOptions
	if *secret != "" {
		if len(*secret) < auth.MinSecretBytes {
			return fmt.Errorf("-jwt-secret: %d bytes is too short to resist guessing: at least %d", len(*secret), auth.MinSecretBytes)
		}
		o.Secret = []byte(*secret)
	} else {
		b, err := os.ReadFile(*privateKey)
		if err != nil {
			return fmt.Errorf("-jwt-private-key: %w", err)
		}
		if o.PrivateKey, err = auth.ParsePrivateKeyPEM(b); err != nil {
			return fmt.Errorf("-jwt-private-key %s: %w", *privateKey, err)
		}
	}
	o.KeyID = *kid
	tok, err := auth.Mint(o, c)
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}

// claimFlag splits -claim's key=value; the key may not be a claim the
// token's own flags set.
func claimFlag(s string) (string, string, error) {
	k, v, ok := strings.Cut(s, "=")
	switch {
	case !ok || k == "":
		return "", "", fmt.Errorf("%q: want key=value", s)
	case auth.IsRegistered(k):
		return "", "", fmt.Errorf("%q is a claim Roomgate reads itself: use -sub, -name, -rooms, -admin, -ttl, -jwt-issuer or -jwt-audience", k)
	}
	return k, v, nil
}

// validPattern reports whether a rooms pattern can match a room at all.
func validPattern(p string) bool {
	if p == "*" {
		return true
	}
	class, room, ok := strings.Cut(p, "/")
	return ok && rooms.ValidClass(class) && (room == "*" || rooms.ValidRoom(room))
}
