package roomgate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

// certificate is the -tls-cert/-tls-key pair. Handshakes take whichever
// pair was loaded last (GetCertificate), so a reload on SIGHUP reaches new
// connections at once while those already made keep theirs: no socket is
// dropped to renew a certificate.
type certificate struct {
	certFile, keyFile string
	pair              atomic.Pointer[tls.Certificate]
}

// loadCertificate reads the pair once; a node does not start without it.
func loadCertificate(certFile, keyFile string) (*certificate, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("-tls-cert and -tls-key go together")
	}
	c := &certificate{certFile: certFile, keyFile: keyFile}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads the files again and swaps the pair in; on failure the pair
// in use stays.
func (c *certificate) reload() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("-tls-cert/-tls-key: %w", err)
	}
	c.pair.Store(&pair)
	return nil
}

// config is the server's TLS configuration.
func (c *certificate) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.pair.Load(), nil
		},
	}
}

// logAttrs says which pair is in use.
func (c *certificate) logAttrs() []any {
	leaf := c.pair.Load().Leaf // set by LoadX509KeyPair
	if leaf == nil {
		return []any{"cert", c.certFile}
	}
	return []any{"cert", c.certFile, "subject", leaf.Subject.String(), "not_after", leaf.NotAfter.Format(time.RFC3339)}
}

// reloadOnHUP reloads the pair on every SIGHUP until ctx ends, and logs
// the outcome: a renewal (certbot's deploy hook, cert-manager) needs no
// restart.
func (c *certificate) reloadOnHUP(ctx context.Context, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := c.reload(); err != nil {
					log.Error("tls certificate reload failed; keeping the old one", append([]any{"err", err}, c.logAttrs()...)...)
					continue
				}
				log.Info("tls certificate reloaded", c.logAttrs()...)
			}
		}
	}()
}
