package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newReshardCmd) }

// reshardHook, set only by tests, sees each step of a reshard as it is
// reported: the tests kill the process there.
var reshardHook func(filestore.ReshardProgress)

func newReshardCmd(e *env) *cobra.Command {
	var layout string
	cmd := &cobra.Command{
		Use:   "reshard DIR --layout LxW|flat",
		Short: "Move a store to another shard layout",
		Long: `reshard moves every session of the store in DIR to another shard layout:
"flat", or "LxW" for L levels of directories named by W hex digits of the
key ("1x2" is 256 directories, "1x3" 4,096, "2x2" 65,536). bench/ measures
which suits a store's size.

It needs the store to itself: it refuses while any process has the store
open, and while it runs the application cannot open it. It is crash-safe:
if it is killed, run the same command again to finish; until then opening
the store fails with an error that names this command. Files the store did
not create are moved to the quarantine directory in DIR, never deleted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if layout == "" {
				return usagef("reshard: --layout is required")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return e.reshard(ctx, args[0], layout)
		},
	}
	cmd.Flags().StringVar(&layout, "layout", "", `the new layout: "flat" or "LxW", such as 1x3`)
	return cmd
}

func (e *env) reshard(ctx context.Context, dir, layout string) error {
	start := time.Now()
	var (
		bar   *progress
		moved int
	)
	err := filestore.Reshard(ctx, dir, layout, func(p filestore.ReshardProgress) {
		if p.Step == "start" && p.Total > 0 {
			bar = e.newProgress(int64(p.Total), "moving")
		}
		if p.Step == "move" {
			moved = p.Done
			if bar != nil {
				bar.Set(int64(p.Done))
			}
		}
		if reshardHook != nil {
			reshardHook(p)
		}
	})
	if bar != nil {
		bar.Finish()
	}
	switch {
	case errors.Is(err, filestore.ErrInUse):
		return problems("%v", err)
	case errors.Is(err, context.Canceled):
		return problems("reshard interrupted after moving %d files; run the same command again to finish", moved)
	case err != nil:
		return problems("%v", err)
	}
	fmt.Fprintf(e.stdout, "resharded %s to %s: %d files moved in %s\n", dir, layout, moved, time.Since(start).Round(time.Millisecond))
	return nil
}
