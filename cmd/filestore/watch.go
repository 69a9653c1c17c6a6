package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newWatch) }

// watchEvent is one line of watch --json.
type watchEvent struct {
	Time  time.Time `json:"time"`
	Event string    `json:"event"` // "saved", "deleted" or "overflow"
	Key   string    `json:"key,omitempty"`
}

func newWatch(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "watch DIR",
		Short: "Print sessions saved and deleted by any process, as it happens",
		Long: `watch prints one line for each session saved or deleted in the store, by
any process, until interrupted (Ctrl-C or SIGTERM, exit status 0). Events
name sessions by key, and arrive shortly after the change; "overflow" means
events were lost because they came faster than they could be read.`,
		Args: cobra.ExactArgs(1),
	}
	c.Flags().BoolVar(&e.jsonOut, "json", false, "print one JSON object a line")
	c.RunE = func(c *cobra.Command, args []string) (err error) {
		ctx := c.Context()
		s, err := openStore(args[0])
		if err != nil {
			return err
		}
		defer closeStore(s, &err)
		events, err := s.Watch(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "filestore: watching %s; Ctrl-C to stop\n", s.Dir())
		enc := json.NewEncoder(e.stdout)
		for ev := range events {
			we := watchEvent{Time: time.Now().UTC(), Key: ev.Key}
			switch ev.Kind {
			case filestore.EventSaved:
				we.Event = "saved"
			case filestore.EventDeleted:
				we.Event = "deleted"
			case filestore.EventOverflow:
				we.Event = "overflow"
			default:
				we.Event = ev.Kind.String()
			}
			if e.jsonOut {
				err = enc.Encode(we)
			} else if we.Event == "overflow" {
				_, err = fmt.Fprintf(e.stdout, "%s overflow (events were lost)\n", we.Time.Format(time.RFC3339Nano))
			} else {
				_, err = fmt.Fprintf(e.stdout, "%s %-7s %s\n", we.Time.Format(time.RFC3339Nano), we.Event, we.Key)
			}
			if err != nil {
				return err // standard output is gone: stop
			}
		}
		// The channel closes when ctx ends (an interrupt: a normal end)
		// or the store closes.
		return nil
	}
	return c
}
