package main

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

const (
	// maxOTLPBody bounds one export request.
	maxOTLPBody = 4 << 20
	// maxTraces bounds the trace ids the collector keeps.
	maxTraces = 10000
)

// SpansReport is what the collector received: spans by trace id (hex), and their names.
type SpansReport struct {
	Exports int
	Spans   int
	Traces  map[string][]string
}

// collector is an OTLP/HTTP traces receiver (POST /v1/traces, protobuf, optionally gzip) that keeps
// the spans' trace ids and names; GET /spans reports them as JSON.
func collector(args []string) error {
	fs := flag.NewFlagSet("otlp", flag.ExitOnError)
	port := fs.Int("port", 4318, "listen port")
	_ = fs.Parse(args)
	var mu sync.Mutex
	rep := SpansReport{Traces: map[string][]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = http.MaxBytesReader(w, r.Body, maxOTLPBody)
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = io.LimitReader(zr, maxOTLPBody)
		}
		raw, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req := &collectortrace.ExportTraceServiceRequest{}
		if err := proto.Unmarshal(raw, req); err != nil {
			http.Error(w, "not an OTLP ExportTraceServiceRequest (protobuf): "+err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		rep.Exports++
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					rep.Spans++
					id := hex.EncodeToString(sp.TraceId)
					if _, ok := rep.Traces[id]; ok || len(rep.Traces) < maxTraces {
						rep.Traces[id] = append(rep.Traces[id], sp.Name)
					}
				}
			}
		}
		mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	})
	mux.HandleFunc("GET /spans", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, "%s", mustJSON(rep))
	})
	srv := &http.Server{Addr: fmt.Sprintf(":%d", *port), Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	fmt.Fprintf(os.Stderr, "otlp: listening on :%d\n", *port)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
