package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"regflow/engine"
)

func cmdRun(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "run [flags] DIR...", stderr)
	url := fs.String("amqp-url", "", "broker URL (default: $REGFLOW_AMQP_URL, then broker.url)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", "text", "text or json")
	drain := fs.Duration("drain-timeout", 30*time.Second, "how long a shutdown waits for messages in flight")
	health := fs.String("health-addr", "", "serve /healthz and /readyz on this address, e.g. 127.0.0.1:8086")
	profile := fs.Bool("pprof", false, "also serve Go's profiles under /debug/pprof/ on the health address")
	paths, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		fs.Usage()
		return errUsage
	}
	if *profile && *health == "" {
		fmt.Fprintln(stderr, "regflow run: --pprof serves the profiles on the health address; give --health-addr too")
		return errUsage
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(paths, stderr)
	if err != nil {
		return err
	}
	svc, err := openServices(cfg, log)
	if err != nil {
		return err
	}
	defer svc.Store.Close()

	e := engine.NewEngine(cfg, amqpURL(*url, cfg.Broker.URL), svc)
	e.DrainTimeout = *drain
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *health != "" {
		if err := serveHealth(ctx, *health, e, *profile); err != nil {
			return err
		}
	}
	return e.Run(ctx)
}

// openServices opens the store and the mailer the configuration names,
// resolving relative paths against the working directory.
func openServices(cfg *engine.Config, log *slog.Logger) (*engine.Services, error) {
	root, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	svc := &engine.Services{Root: root, Commands: engine.OSCommands{}, Logger: log}
	svc.Store, err = engine.OpenStore(svc.Path(cfg.Store.Path))
	if err != nil {
		return nil, err
	}
	if cfg.Mail.SMTP != "" {
		smtp, err := engine.ParseSMTPURL(cfg.Mail.SMTP)
		if err != nil {
			return nil, err
		}
		if svc.Mailer, err = engine.NewSMTP(smtp); err != nil {
			return nil, err
		}
	} else {
		svc.Mailer = &engine.Outbox{Dir: svc.Path(cfg.Mail.Outbox)}
	}
	return svc, nil
}

// serveHealth answers /healthz while the process runs and /readyz while
// the engine is connected and consuming.
func serveHealth(ctx context.Context, addr string, e *engine.Engine, profile bool) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !e.Ready() {
			http.Error(w, "not ready: not connected to the broker", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if profile {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "health:", err)
		}
	}()
	return nil
}
