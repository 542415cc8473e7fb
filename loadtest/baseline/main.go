// Command baseline is the goroutine-per-connection WebSocket echo server
// that Roomgate's benchmarks compare the gateway with. It is gobwas/ws used
// the way its README shows: upgrade, then one goroutine per connection that
// reads a message and writes it back. It serves /metrics with the same Go
// and process collectors as roomgate, so the harness measures both alike.
//
//	go run ./loadtest/baseline -addr 127.0.0.1:9090
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "listen address")
	flag.Parse()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/ws/", func(w http.ResponseWriter, r *http.Request) {
		conn, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			for {
				msg, op, err := wsutil.ReadClientData(conn)
				if err != nil {
					return
				}
				if err := wsutil.WriteServerMessage(conn, op, msg); err != nil {
					return
				}
			}
		}()
	})
	log.Printf("baseline echo server on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}
