package filestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"time"
)

// Resharding moves every record from <root>/data, in the old layout, to
// <root>/data.new, in the new one, then renames data.new to data. The
// marker says which layout is in force; while it also names a reshard
// target, Open refuses the store. The steps, each of which a rerun
// recognises from what is on disk, so that a reshard killed anywhere
// finishes when run again:
//
//  1. mkdir data.new; then write the marker with "reshard": the target.
//     (A data.new without such a marker is a leftover of a run killed
//     before step 1 ended: it holds only empty directories, and is
//     removed and made again.)
//  2. Rename each file of data to its place in data.new. A rename is
//     atomic, so each record is at exactly one of its two places. Temp
//     files of dead writers are removed; names the store did not make go
//     to the quarantine directory, never deleted. A record whose new
//     place is taken (the same key twice in the old tree, which only an
//     outside copy makes) goes to the quarantine directory too.
//  3. Sync every directory of data.new, then remove data's now empty
//     directories, data last.
//  4. Rename data.new to data.
//  5. Write the marker with the new layout and no reshard target.
//
// So with a reshard marker on disk: data.new present means steps 2-4 are
// to do (step 2 finds nothing left to move if data is gone), and data.new
// absent means only step 5 is. Every step runs under the store lock held
// exclusively, so no Store has the store open meanwhile.

// reshardDir is where a reshard builds the new tree.
const reshardDir = "data.new"

// Reshard moves the store in dir to layout ("flat" or "LxW"). It needs the
// store to itself: it fails with ErrInUse while any Store, in any process,
// has it open, and holds the store lock exclusively while it runs, so that
// Open elsewhere fails with ErrResharding instead of waiting.
//
// It is crash-safe: killed at any point, a later Reshard to the same layout
// finishes the job, no record lost or duplicated; until then Open fails
// with ErrResharding and a message naming the command that finishes it. A
// Reshard to another layout than the unfinished one's fails with
// ErrLayout. Resharding to the current layout does nothing.
//
// progress, if not nil, is called after each step and each record moved.
// Reshard honours ctx between records; stopped early, it leaves a reshard
// that a rerun finishes.
func Reshard(ctx context.Context, dir, layout string, progress func(ReshardProgress)) error {
	return reshard(ctx, dir, layout, progress, osFS{})
}

func reshard(ctx context.Context, dir, layout string, progress func(ReshardProgress), fsys fsys) error {
	to, err := parseLayout(layout)
	if err != nil {
		return opErr("reshard", err)
	}
	if progress == nil {
		progress = func(ReshardProgress) {}
	}
	s, err := openStore(dir, &Options{NoCreate: true, SweepInterval: -1}, fsys, true)
	if err != nil {
		return opErr("reshard", unwrapOp(err))
	}
	defer s.Close()
	if err := s.reshard(ctx, to, progress); err != nil {
		return opErr("reshard", err)
	}
	return nil
}

// unwrapOp strips openStore's "open: " so that Reshard's errors read as
// its own.
func unwrapOp(err error) error {
	var oe *opError
	if errors.As(err, &oe) {
		return oe.err
	}
	return err
}

func (s *Store) reshard(ctx context.Context, to layout, progress func(ReshardProgress)) error {
	m, err := readMarker(s.fs, s.root)
	if err != nil {
		return err
	}
	newData := filepath.Join(s.root, reshardDir)
	switch {
	case m.Reshard == "" && to == s.layout:
		progress(ReshardProgress{Step: "done"})
		return nil
	case m.Reshard == "":
		// Step 1.
		if err := s.removeEmptyTree(newData); err != nil {
			return fmt.Errorf("%s is left from an earlier run and not empty: %w", reshardDir, err)
		}
		if err := s.mkdirIn(s.root, newData); err != nil {
			return err
		}
		m.Reshard = to.String()
		if err := s.writeMarker(m); err != nil {
			return err
		}
	case m.Reshard != to.String():
		return fmt.Errorf("%w: a reshard to %q did not finish; run it again with that layout first", ErrLayout, m.Reshard)
	}
	total, err := s.countFiles(ctx)
	if err != nil {
		return err
	}
	progress(ReshardProgress{Step: "start", Total: total})
	if err := ctx.Err(); err != nil {
		return err
	}

	if _, err := s.fs.Lstat(newData); err == nil {
		mv := mover{s: s, to: to, newData: newData, touched: map[string]bool{}, progress: progress, total: total}
		if err := mv.moveTree(ctx, s.data, 0); err != nil {
			return err
		}
		// Step 3.
		if err := mv.syncNew(); err != nil {
			return err
		}
		if err := s.removeEmptyTree(s.data); err != nil {
			return err
		}
		progress(ReshardProgress{Step: "cleanup", Done: mv.done, Total: total})
		if err := ctx.Err(); err != nil {
			return err
		}
		// Step 4.
		if err := s.fs.Rename(newData, s.data); err != nil {
			return err
		}
		if err := s.syncDir(s.root, syncAfterRename); err != nil {
			return err
		}
		progress(ReshardProgress{Step: "switch", Done: mv.done, Total: total})
		if err := ctx.Err(); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// Step 5.
	m.Layout, m.Reshard = to.String(), ""
	if err := s.writeMarker(m); err != nil {
		return err
	}
	progress(ReshardProgress{Step: "done", Total: total})
	return nil
}

// countFiles counts the entries left to move, as moveTree will meet them:
// for progress only. It lists directories and reads no record.
func (s *Store) countFiles(ctx context.Context) (int, error) {
	return s.countIn(ctx, s.data, 0)
}

func (s *Store) countIn(ctx context.Context, path string, level int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	names, err := listDir(s.fs, path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, name := range names {
		if level < s.layout.levels && s.layout.isShardName(name) {
			if fi, err := s.fs.Lstat(filepath.Join(path, name)); err == nil && fi.IsDir() {
				m, err := s.countIn(ctx, filepath.Join(path, name), level+1)
				if err != nil {
					return 0, err
				}
				n += m
				continue
			}
		}
		n++
	}
	return n, nil
}

// mover is step 2 of a reshard.
type mover struct {
	s        *Store
	to       layout
	newData  string
	touched  map[string]bool // directories records were moved into, synced by syncNew
	progress func(ReshardProgress)
	done     int
	total    int
}

// moveTree moves every entry of the old tree's directory path, level
// levels below data, out of it, depth first.
func (mv *mover) moveTree(ctx context.Context, path string, level int) error {
	s := mv.s
	d, err := s.fs.OpenDir(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	// Moving names out of a directory while listing it can make readdir
	// skip some: list it whole first (a shard holds what it holds; flat
	// stores have to be read whole here anyway).
	names, err := d.ReadNames(-1)
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := d.Lstat(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		from := filepath.Join(path, name)
		switch {
		case fi.IsDir() && level < s.layout.levels && s.layout.isShardName(name):
			if err := mv.moveTree(ctx, from, level+1); err != nil {
				return err
			}
			continue
		case isRecordName(name) && !fi.IsDir():
			dst, _ := mv.to.recordPath(mv.newData, name)
			if err := mv.place(from, dst, name); err != nil {
				return err
			}
		case isTemp(name) && fi.Mode().IsRegular():
			// No Store has the store open, so no writer owns it.
			if err := d.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		default:
			if err := mv.toQuarantine(from, name); err != nil {
				return err
			}
		}
		mv.done++
		mv.progress(ReshardProgress{Step: "move", Done: mv.done, Total: mv.total})
	}
	return nil
}

// place renames the record file from to dir/name in the new tree, or into
// the quarantine directory if that name is taken.
func (mv *mover) place(from, dir, name string) error {
	s := mv.s
	if !mv.touched[dir] {
		if err := s.mkdirTree(mv.newData, dir); err != nil {
			return err
		}
		mv.touched[dir] = true
	}
	dst := filepath.Join(dir, name)
	if _, err := s.fs.Lstat(dst); err == nil {
		return mv.toQuarantine(from, name)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return s.fs.Rename(from, dst)
}

// toQuarantine moves from, which a reshard does not carry over, to the
// quarantine directory.
func (mv *mover) toQuarantine(from, name string) error {
	s := mv.s
	qdir := filepath.Join(s.root, QuarantineDir)
	if err := s.mkdirIn(s.root, qdir); err != nil {
		return err
	}
	mv.touched[qdir] = true
	return s.fs.Rename(from, filepath.Join(qdir, fmt.Sprintf("%s.reshard.%d", name, s.now().UnixNano())))
}

// syncNew syncs every directory that records were moved into.
func (mv *mover) syncNew() error {
	dirs := make([]string, 0, len(mv.touched))
	for d := range mv.touched {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		if err := mv.s.syncDir(d, syncAfterRename); err != nil {
			return err
		}
	}
	return nil
}

// mkdirTree creates dir and its missing parents down from base, which
// exists.
func (s *Store) mkdirTree(base, dir string) error {
	if dir == base || len(dir) <= len(base) {
		return nil
	}
	if err := s.mkdirTree(base, filepath.Dir(dir)); err != nil {
		return err
	}
	return s.mkdirIn(filepath.Dir(dir), dir)
}

// removeEmptyTree removes the directory path and the directories below it,
// and fails, removing nothing more, on the first entry that is not a
// directory. A missing path is not an error.
func (s *Store) removeEmptyTree(path string) error {
	names, err := listDir(s.fs, path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, name := range names {
		child := filepath.Join(path, name)
		fi, err := s.fs.Lstat(child)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s: %w", s.rel(child), fs.ErrExist)
		}
		if err := s.removeEmptyTree(child); err != nil {
			return err
		}
	}
	if err := s.fs.Remove(path); err != nil {
		return err
	}
	return s.syncDir(filepath.Dir(path), syncAfterUnlink)
}

// writeMarker replaces the marker with m: a temp file renamed over it, and
// the root synced. Only a reshard rewrites the marker, under the store lock
// held exclusively.
func (s *Store) writeMarker(m marker) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	tmp, err := s.writeTemp(pathsIn(s.fs, s.root), initPrefix, b, time.Time{})
	if err != nil {
		return err
	}
	if err := s.fs.Rename(filepath.Join(s.root, tmp), filepath.Join(s.root, markerName)); err != nil {
		_ = s.fs.Remove(filepath.Join(s.root, tmp)) // error deliberately ignored: already failing
		return err
	}
	return s.syncDir(s.root, syncAfterRename)
}

// isTemp reports whether name is a record's temp file name.
func isTemp(name string) bool {
	_, ok := tempOwner(name)
	return ok
}
