// Command ferretdb runs FerretDB v1 (SQLite backend) through its embeddable package.
//
// The stock cmd/ferretdb only builds inside FerretDB's own repository (it panics
// without a generated version.txt), so mongrate's test fixtures build this wrapper
// from the published Go module instead. It takes the stock binary's flag names;
// telemetry is always off and no debug listener is started.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	handler := flag.String("handler", "sqlite", "backend handler (only sqlite is supported here)")
	sqliteURL := flag.String("sqlite-url", "file:data/", "SQLite URI (a directory, ending with /)")
	telemetry := flag.String("telemetry", "disable", "telemetry: only 'disable' is accepted")
	debugAddr := flag.String("debug-addr", "-", "debug listener: only '-' (none) is accepted")
	logLevel := flag.String("log-level", "error", "log level: debug, info, warn, error")
	flag.Parse()

	if *handler != "sqlite" || *telemetry != "disable" || *debugAddr != "-" {
		fmt.Fprintln(os.Stderr, "ferretdb: only --handler=sqlite --telemetry=disable --debug-addr=- are supported")
		os.Exit(2)
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: bad --log-level: %s\n", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: *sqliteURL,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: %s\n", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if err := f.Run(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "ferretdb: %s\n", err)
		os.Exit(1)
	}
}
