package linknet

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Over TCP the hellos travel in the upgrade's headers, the stream carries
// what was written either way, and a refusal's status reaches the dialer.
func TestTCPHandshake(t *testing.T) {
	acc := newAcceptor("b")
	srv := httptest.NewServer(Handler(acc))
	defer srv.Close()
	address := strings.TrimPrefix(srv.URL, "http://")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, ans, err := TCP{}.Dial(ctx, "b", address, Hello{Node: "a", Incarnation: 3, Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if ans != (Hello{Node: "b", Incarnation: 7}) {
		t.Fatalf("answer %+v", ans)
	}
	if peer := <-acc.peers; peer != (Hello{Node: "a", Incarnation: 3}) {
		t.Fatalf("b was dialed by %+v; want a, incarnation 3, the secret not kept", peer)
	}
	if from := <-acc.froms; !strings.HasPrefix(from, "127.0.0.1:") {
		t.Fatalf("dialed from %q", from)
	}
	b := <-acc.conns
	defer b.Close()
	write(t, a, "ping")
	if got, err := read(b); got != "ping" || err != nil {
		t.Fatalf("b read %q, %v", got, err)
	}
	write(t, b, "pong")
	if got, err := read(a); got != "pong" || err != nil {
		t.Fatalf("a read %q, %v", got, err)
	}

	if _, _, err := (TCP{}).Dial(ctx, "c", address, Hello{Node: "a", Incarnation: 3}); err == nil || !strings.Contains(err.Error(), `node there is "b", not "c"`) {
		t.Fatalf("dial answered by another node: %v", err)
	}
	acc.refuse = &Refusal{Status: http.StatusForbidden, Code: "forbidden", Message: "no"}
	if _, _, err := (TCP{}).Dial(ctx, "b", address, Hello{Node: "a", Incarnation: 3}); err == nil || err.Error() != "link to "+address+" refused: 403 Forbidden" {
		t.Fatalf("refused dial: %v", err)
	}
}

// A request that is not a link's upgrade reaches Admit with no node, so
// the acceptor refuses it after checking the secret.
func TestTCPBadHelloHasNoNode(t *testing.T) {
	acc := newAcceptor("b")
	acc.refuse = &Refusal{Status: http.StatusBadRequest, Code: "bad_request", Message: "not a cluster link upgrade"}
	srv := httptest.NewServer(Handler(acc))
	defer srv.Close()
	for name, h := range map[string]http.Header{
		"no upgrade":        {HeaderNode: {"a"}, HeaderIncarnation: {"1"}},
		"no incarnation":    {"Upgrade": {Protocol}, HeaderNode: {"a"}},
		"wrong incarnation": {"Upgrade": {Protocol}, HeaderNode: {"a"}, HeaderIncarnation: {"x"}},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+Path, nil)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if peer := <-acc.admits; resp.StatusCode != http.StatusBadRequest || peer.Node != "" {
			t.Errorf("%s: %d, Admit saw %+v; want 400 and no node", name, resp.StatusCode, peer)
		}
		<-acc.froms
	}
}
