package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/internal/cli"
	"github.com/kioskpay/kioskpay/store"
)

// storeFile is the order store's file name in the state directory.
const storeFile = "orders.db"

// openStore opens the order store. A store the check at open finds damaged
// is never written to: it is moved aside and everything readable in it is
// salvaged into a new one (store.Recover), and the daemon serves from that,
// flagged store_recovered. The error is non-nil only when the store cannot
// be opened or the salvage itself failed.
func openStore(log *slog.Logger, path string, opts store.Options) (*store.DB, error) {
	db, err := store.Open(path, opts)
	var de *store.DamagedError
	if !errors.As(err, &de) {
		return db, err
	}
	log.Error("store damaged: moving it aside and salvaging what it holds", "file", path, "reason", de.Reason)
	db, r, err := store.Recover(path, de.Reason, opts)
	if err != nil {
		return nil, fmt.Errorf("store %s is damaged (%s) and could not be salvaged: %w", path, de.Reason, err)
	}
	log.Warn("store recovered: serving from what was salvaged", "summary", r.Summary(), "orders", r.Orders,
		"live", r.Live, "results", r.Results, "lost", r.LostCount, "damaged_file", r.Damaged)
	return db, nil
}

const recoverUsage = `kioskpayd recover checks the order store and rebuilds a damaged one: the file is
moved aside (kept, for forensics), every order still readable in it is salvaged into a
new store, and the daemon reports store_recovered until the record is cleared. This is
what the daemon does by itself when the check at start finds the store damaged; the
check here reads the whole file (bbolt's full consistency check), so it also finds
damage in old orders. Stop kioskpayd first: the store is locked while it runs.

Usage:
  kioskpayd recover -config FILE            check; rebuild the store if it is damaged
  kioskpayd recover -config FILE -check     only check
  kioskpayd recover -config FILE -force     rebuild even if the check finds nothing
  kioskpayd recover -config FILE -clear     clear the store_recovered flag (a person has looked)

Exit codes: 0 the store is sound (or was rebuilt, or the flag cleared), 1 it is damaged
(-check), locked, or the rebuild failed, 2 bad configuration or usage.
`

func runRecover(args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("kioskpayd recover", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration file")
	checkOnly := fs.Bool("check", false, "only check the store")
	force := fs.Bool("force", false, "rebuild the store even if the check finds nothing")
	clearFlag := fs.Bool("clear", false, "clear the store_recovered flag")
	if code, done := cli.Parse(fs, args, recoverUsage, false, stdout, stderr); done {
		return code
	}
	if *configPath == "" {
		return cli.Usagef(stderr, "kioskpayd recover", "-config FILE is required")
	}
	if *checkOnly && (*force || *clearFlag) || *force && *clearFlag {
		return cli.Usagef(stderr, "kioskpayd recover", "-check, -force and -clear go alone")
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		printConfigError(stderr, err)
		return exitBadConfig
	}
	path := filepath.Join(cfg.StateDir, storeFile)
	opts := store.Options{Retention: cfg.Retention()}
	if *clearFlag {
		db, err := store.Open(path, opts)
		if err != nil {
			fmt.Fprintf(stderr, "kioskpayd recover: %v\n", err)
			return exitFatal
		}
		defer db.Close()
		if err := db.Update(func(tx *store.Tx) error { return tx.ClearRecovery() }); err != nil {
			fmt.Fprintf(stderr, "kioskpayd recover: %s: %v\n", path, err)
			return exitFatal
		}
		fmt.Fprintf(stdout, "%s: store_recovered cleared\n", path)
		return exitOK
	}
	fmt.Fprintf(stdout, "checking %s …\n", path)
	problems, err := store.Check(path)
	if err != nil {
		fmt.Fprintf(stderr, "kioskpayd recover: %v\n", err)
		return exitFatal
	}
	for _, p := range problems {
		fmt.Fprintf(stdout, "  %s\n", p)
	}
	switch {
	case len(problems) == 0 && !*force:
		fmt.Fprintf(stdout, "%s is sound\n", path)
		return exitOK
	case *checkOnly:
		fmt.Fprintf(stdout, "%s is damaged (%d problems); run kioskpayd recover -config %s to rebuild it\n", path, len(problems), *configPath)
		return exitFatal
	}
	reason := "rebuilt by an operator"
	if len(problems) > 0 {
		reason = problems[0]
	}
	db, r, err := store.Recover(path, reason, opts)
	if err != nil {
		fmt.Fprintf(stderr, "kioskpayd recover: store %s could not be salvaged: %v\n", path, err)
		return exitFatal
	}
	defer db.Close()
	log.Info("store rebuilt", "summary", r.Summary())
	fmt.Fprintln(stdout, r.Summary())
	fmt.Fprintln(stdout, "the daemon reconciles the salvaged orders with the providers when it starts, and reports store_recovered until kioskpayd recover -clear")
	return exitOK
}
