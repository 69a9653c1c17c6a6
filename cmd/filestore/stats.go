package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/filestore-go/filestore"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newStats) }

// statsReport is what stats prints, and its --json form.
type statsReport struct {
	Dir           string      `json:"dir"`
	Layout        string      `json:"layout"`
	FormatVersion int         `json:"format_version"`
	Live          int         `json:"live"`
	Expired       int         `json:"expired"`
	Corrupt       int         `json:"corrupt"`
	Misplaced     int         `json:"misplaced"`
	Temp          int         `json:"temp"`
	StaleTemp     int         `json:"stale_temp"`
	Foreign       int         `json:"foreign"`
	DiskBytes     int64       `json:"disk_bytes"`
	Inodes        int64       `json:"inodes"`
	Shards        shardReport `json:"shards"`
	Sweeping      bool        `json:"sweeping"`
	// Opens is how many other Stores have the store open; -1 when the
	// system cannot tell.
	Opens int `json:"opens"`
}

// shardReport is how records spread over the leaf shard directories.
type shardReport struct {
	Count     int      `json:"count"`
	Min       int      `json:"min"`
	Median    int      `json:"median"`
	Max       int      `json:"max"`
	Histogram []bucket `json:"histogram"`
}

// bucket counts the shards holding From to To records, inclusive.
type bucket struct {
	From   int `json:"from"`
	To     int `json:"to"`
	Shards int `json:"shards"`
}

func newStats(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "stats DIR",
		Short: "Count a store's records and files, and its use of the disk",
		Long: `stats reads every record of the store (a full read, no locks taken) and
prints how many are live, expired, corrupt or misplaced, the temp and
foreign files, the bytes and inodes the store takes on disk, how records
spread over shard directories, the layout and format version, whether a
sweep is running and how many other processes have the store open.`,
		Args: cobra.ExactArgs(1),
	}
	c.Flags().BoolVar(&e.jsonOut, "json", false, "print JSON")
	c.RunE = func(c *cobra.Command, args []string) (err error) {
		s, err := openStore(args[0])
		if err != nil {
			return err
		}
		defer closeStore(s, &err)
		r, err := collectStats(c.Context(), s)
		if err != nil {
			return err
		}
		if e.jsonOut {
			return e.writeJSON(r)
		}
		return e.printStats(r)
	}
	return c
}

func collectStats(ctx context.Context, s *filestore.Store) (*statsReport, error) {
	info, err := s.Stat()
	if err != nil {
		return nil, err
	}
	r := &statsReport{
		Dir:           s.Dir(),
		Layout:        info.Layout,
		FormatVersion: info.FormatVersion,
		Sweeping:      info.Sweeping,
		Opens:         info.Opens,
	}
	shardDirs := map[string]bool{}
	perDir := map[string]int{}
	err = s.Scan(ctx, func(fi filestore.FileInfo) error {
		switch fi.State {
		case filestore.FileLive:
			r.Live++
		case filestore.FileExpired:
			r.Expired++
		case filestore.FileCorrupt:
			r.Corrupt++
		case filestore.FileMisplaced:
			r.Misplaced++
		case filestore.FileTemp:
			r.Temp++
			if fi.Stale {
				r.StaleTemp++
			}
		case filestore.FileForeign:
			r.Foreign++
		case filestore.FileShard:
			shardDirs[fi.Path] = true
		}
		switch fi.State {
		case filestore.FileLive, filestore.FileExpired, filestore.FileCorrupt, filestore.FileMisplaced:
			perDir[path.Dir(fi.Path)]++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.Shards = shardSpread(shardDirs, perDir)
	r.DiskBytes, r.Inodes, err = diskUsage(s.Dir())
	return r, err
}

// shardSpread summarizes the records per leaf shard directory: the shard
// directories with no shard directory under them (the inner levels of a
// deep layout hold no records), and any other directory that holds
// records, such as the single directory of a flat store.
func shardSpread(shardDirs map[string]bool, perDir map[string]int) shardReport {
	leaves := map[string]bool{}
	for d := range shardDirs {
		leaves[d] = true
	}
	for d := range shardDirs {
		delete(leaves, path.Dir(d))
	}
	for d := range perDir {
		leaves[d] = true
	}
	if len(leaves) == 0 {
		return shardReport{Histogram: []bucket{}}
	}
	counts := make([]int, 0, len(leaves))
	for d := range leaves {
		counts = append(counts, perDir[d])
	}
	slices.Sort(counts)
	r := shardReport{
		Count:  len(counts),
		Min:    counts[0],
		Median: counts[(len(counts)-1)/2],
		Max:    counts[len(counts)-1],
	}
	const maxBuckets = 8
	width := (r.Max - r.Min + maxBuckets) / maxBuckets // ceil((max-min+1)/maxBuckets)
	for from := r.Min; from <= r.Max; from += width {
		r.Histogram = append(r.Histogram, bucket{From: from, To: from + width - 1})
	}
	for _, n := range counts {
		r.Histogram[(n-r.Min)/width].Shards++
	}
	return r
}

// diskUsage sums the blocks allocated to every file and directory under
// root, the root included, and counts them. Files removed while it walks
// are left out.
func diskUsage(root string) (bytes, inodes int64, err error) {
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		bytes += allocated(fi)
		inodes++
		return nil
	})
	return bytes, inodes, err
}

func (e *env) printStats(r *statsReport) error {
	w := e.table()
	fmt.Fprintf(w, "store\t%s\n", r.Dir)
	fmt.Fprintf(w, "layout\t%s (format version %d)\n", r.Layout, r.FormatVersion)
	fmt.Fprintf(w, "live\t%d\n", r.Live)
	fmt.Fprintf(w, "expired\t%d\n", r.Expired)
	fmt.Fprintf(w, "corrupt\t%d\n", r.Corrupt)
	fmt.Fprintf(w, "misplaced\t%d\n", r.Misplaced)
	fmt.Fprintf(w, "temp\t%d (%d stale)\n", r.Temp, r.StaleTemp)
	fmt.Fprintf(w, "foreign\t%d\n", r.Foreign)
	fmt.Fprintf(w, "on disk\t%s (%d bytes) in %d inodes\n", humanBytes(r.DiskBytes), r.DiskBytes, r.Inodes)
	fmt.Fprintf(w, "shards\t%d, records per shard: min %d, median %d, max %d\n", r.Shards.Count, r.Shards.Min, r.Shards.Median, r.Shards.Max)
	fmt.Fprintf(w, "sweeping\t%s\n", yesNo(r.Sweeping))
	opens := "unknown"
	if r.Opens >= 0 {
		opens = fmt.Sprint(r.Opens)
	}
	fmt.Fprintf(w, "other opens\t%s\n", opens)
	if err := w.Flush(); err != nil {
		return err
	}
	if len(r.Shards.Histogram) == 0 {
		return nil
	}
	fmt.Fprintln(e.stdout, "records per shard:")
	most := 0
	for _, b := range r.Shards.Histogram {
		most = max(most, b.Shards)
	}
	w = e.table()
	for _, b := range r.Shards.Histogram {
		span := fmt.Sprint(b.From)
		if b.To != b.From {
			span = fmt.Sprintf("%d-%d", b.From, b.To)
		}
		bar := strings.Repeat("#", (b.Shards*40+most-1)/most)
		fmt.Fprintf(w, "  %s\t%d\t%s\n", span, b.Shards, bar)
	}
	return w.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
