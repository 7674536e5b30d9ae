package exporter

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
)

// Handler serves the exporter's metrics at /metrics and a short page at /.
func Handler(e *Exporter, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", gzipped(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ContentType)
		if err := e.Write(w); err != nil {
			log.Debug("write a scrape", "err", err) // the scraper went away
		}
	})))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!DOCTYPE html><html><head><title>traffic_meter exporter</title></head>
<body><h1>traffic_meter exporter</h1><p><a href="metrics">Metrics</a></p></body></html>
`)
	})
	return mux
}

// gzipped compresses the responses of h for clients that accept gzip, as
// Prometheus does, at the fastest level: a million rules make 280 MB of
// text, which promhttp's default level takes over 3 s to compress.
func gzipped(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !acceptsGzip(r.Header.Get("Accept-Encoding")) {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Add("Vary", "Accept-Encoding")
		gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed) // a valid level: no error
		defer gz.Close()
		h.ServeHTTP(gzipWriter{w, gz}, r)
	})
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip (RFC
// 9110, 12.5.3): named, or covered by "*", with a quality above zero.
func acceptsGzip(header string) bool {
	gzip, star := -1.0, -1.0
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			name, value, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(strings.TrimSpace(name), "q") {
				v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
				if err != nil || v < 0 || v > 1 {
					v = 0 // an invalid weight: not acceptable
				}
				q = v
			}
		}
		switch c := strings.ToLower(strings.TrimSpace(coding)); c {
		case "gzip", "x-gzip":
			gzip = max(gzip, q)
		case "*":
			star = q
		}
	}
	if gzip >= 0 {
		return gzip > 0
	}
	return star > 0
}

// gzipWriter is a ResponseWriter whose body goes through a gzip writer.
type gzipWriter struct {
	http.ResponseWriter
	gz *gzip.Writer
}

func (g gzipWriter) Write(p []byte) (int, error) { return g.gz.Write(p) }

// Serve serves h on the listener until ctx is done, then shuts down,
// letting scrapes in progress finish for up to five seconds. webConfig, when
// not empty, is a Prometheus web configuration file
// (https://prometheus.io/docs/prometheus/latest/configuration/https/) that
// turns on TLS and basic authentication; it is read again at every new
// connection, so certificates and passwords change without a restart.
func Serve(ctx context.Context, l net.Listener, h http.Handler, webConfig string, log *slog.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- srv.Shutdown(sctx)
	}()
	addrs := []string{l.Addr().String()}
	flags := &web.FlagConfig{WebListenAddresses: &addrs, WebConfigFile: &webConfig}
	if err := web.Serve(l, srv, flags, log); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return <-done
}

// CheckWebConfig reads a web configuration file for Serve, and the
// certificates it names, and reports what is wrong with them.
func CheckWebConfig(file string) error {
	return web.Validate(file)
}
