// Command vigilprof is `vigil run` with net/http/pprof on a second
// loopback listener (VIGIL_BENCH_PPROF, host:port), so the bench command can
// profile the real agent under the side-by-side load. It runs exactly the
// agent code `vigil run` runs.
package main

import (
	"context"
	"fmt"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"syscall"

	"github.com/vigil-agent/vigil/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if addr := os.Getenv("VIGIL_BENCH_PPROF"); addr != "" {
		srv := &http.Server{Addr: addr} // DefaultServeMux: the pprof handlers
		go func() { _ = srv.ListenAndServe() }()
		defer srv.Close()
	}
	cmd := agent.LookupCommand("run")
	if cmd == nil {
		fmt.Fprintln(os.Stderr, "vigilprof: this build has no run command")
		os.Exit(2)
	}
	code := cmd.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
