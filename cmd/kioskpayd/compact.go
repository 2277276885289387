package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/internal/cli"
	"github.com/kioskpay/kioskpay/store"
)

const compactUsage = `kioskpayd compact rewrites the order store into a new, compact file and swaps it in.
bbolt reuses the space of deleted orders but never returns it to the file system, so a
store that once held a long history (or was written before schema 2, whose records
are larger) keeps its size; compacting writes every order again in the current form
with full pages. The old file stays in use until the copy is complete and checked;
a crash at any point leaves either the old or the new file, never a mix.

Stop kioskpayd first: the store is locked while it runs, and compact refuses to
start (exit 1) when it cannot take the lock. It needs free space for the copy
(about the size of the orders, not of the old file).

Downgrading to a build from before store schema 2 (one without this command): run compact with
-schema 1 (with this build, the daemon stopped) before installing the older package;
the older build refuses a schema-2 store. deploy/rollout.sh does this when it rolls
a batch back.

Usage:
  kioskpayd compact -config FILE              compact the store
  kioskpayd compact -config FILE -schema 1    write it for an older build (downgrade)

Exit codes: 0 compacted, 1 locked (the daemon runs) or failed, 2 bad configuration or usage.
`

func runCompact(args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("kioskpayd compact", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration file")
	schema := fs.Uint64("schema", store.SchemaVersion, "store schema to write: 2 (current) or 1 (for a downgrade)")
	if code, done := cli.Parse(fs, args, compactUsage, false, stdout, stderr); done {
		return code
	}
	if *configPath == "" {
		return cli.Usagef(stderr, "kioskpayd compact", "-config FILE is required")
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		printConfigError(stderr, err)
		return exitBadConfig
	}
	path := filepath.Join(cfg.StateDir, storeFile)
	if _, err := os.Stat(path); err != nil {
		fmt.Fprintf(stderr, "kioskpayd compact: %v\n", err)
		return exitFatal
	}
	res, err := store.Compact(path, store.Options{Retention: cfg.Retention(), Logger: log}, *schema)
	switch {
	case errors.Is(err, store.ErrLocked):
		fmt.Fprintf(stderr, "kioskpayd compact: %v\nstop kioskpayd first (systemctl stop kioskpayd), then run this again\n", err)
		return exitFatal
	case errors.Is(err, store.ErrDamaged):
		fmt.Fprintf(stderr, "kioskpayd compact: %v\nrun kioskpayd recover -config %s first\n", err, *configPath)
		return exitFatal
	case err != nil:
		fmt.Fprintf(stderr, "kioskpayd compact: %v\n", err)
		return exitFatal
	}
	fmt.Fprintf(stdout, "%s: %d orders, %s → %s in %s\n", path, res.Orders, sizeText(uint64(res.Before)), sizeText(uint64(res.After)), res.Took.Round(1e6))
	return exitOK
}
