//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// The Recipe benchmarks measure bare syscall sequences two ways: naming
// each file by its whole path, as the bench's raw recipes do, and relative
// to a descriptor of its shard directory held open, as filestore does
// since it keeps shard directories open. They say how much of a ratio to
// the raw recipes is the lookup of the path above the shard rather than
// filestore's own work:
//
//	TMPDIR=/dev/shm go test -run '^$' -bench Recipe -count 3 .

// recipeDir makes a shard directory as deep as a store's, holding n record
// files of 1,100 bytes, and returns it with the files' names.
func recipeDir(b *testing.B, n int) (string, []string) {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "store", "data", "ab")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("ab%062x", i)
		if err := os.WriteFile(filepath.Join(dir, names[i]), make([]byte, 1100), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	return dir, names
}

func openDirFD(b *testing.B, dir string) int {
	b.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = unix.Close(fd) })
	return fd
}

func BenchmarkRecipeLstat(b *testing.B) {
	dir, names := recipeDir(b, 1000)
	var st unix.Stat_t
	b.Run("path", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if err := unix.Lstat(dir+"/"+names[i%len(names)], &st); err != nil {
				b.Fatal(err)
			}
		}
	})
	fd := openDirFD(b, dir)
	b.Run("dirfd", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if err := unix.Fstatat(fd, names[i%len(names)], &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkRecipeRead(b *testing.B) {
	dir, names := recipeDir(b, 1000)
	buf := make([]byte, 4096)
	read := func(b *testing.B, fd int, err error) {
		if err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Read(fd, buf); err != nil {
			b.Fatal(err)
		}
		_ = unix.Close(fd)
	}
	b.Run("path", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			fd, err := unix.Open(dir+"/"+names[i%len(names)], unix.O_RDONLY|unix.O_CLOEXEC, 0)
			read(b, fd, err)
		}
	})
	dfd := openDirFD(b, dir)
	b.Run("dirfd", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			fd, err := unix.Openat(dfd, names[i%len(names)], unix.O_RDONLY|unix.O_CLOEXEC, 0)
			read(b, fd, err)
		}
	})
}

// BenchmarkRecipeWrite is the atomic write: create a temp file, write,
// fsync it (sync), close, rename it over the record, fsync the directory
// (sync). By path the directory fsync opens and closes the directory; with
// a held descriptor it fsyncs that.
func BenchmarkRecipeWrite(b *testing.B) {
	for _, sync := range []bool{true, false} {
		mode := map[bool]string{true: "sync", false: "nosync"}[sync]
		dir, names := recipeDir(b, 1000)
		data := make([]byte, 1100)
		b.Run(mode+"/path", func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				name := names[i%len(names)]
				tmp := dir + "/.tmp-" + name + "-" + strconv.Itoa(i)
				fd, err := unix.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = unix.Write(fd, data)
				if sync {
					_ = unix.Fsync(fd)
				}
				_ = unix.Close(fd)
				if err := unix.Rename(tmp, dir+"/"+name); err != nil {
					b.Fatal(err)
				}
				if sync {
					d, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
					if err != nil {
						b.Fatal(err)
					}
					_ = unix.Fsync(d)
					_ = unix.Close(d)
				}
			}
		})
		dfd := openDirFD(b, dir)
		b.Run(mode+"/dirfd", func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				name := names[i%len(names)]
				tmp := ".tmp-" + name + "-" + strconv.Itoa(i)
				fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = unix.Write(fd, data)
				if sync {
					_ = unix.Fsync(fd)
				}
				_ = unix.Close(fd)
				if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
					b.Fatal(err)
				}
				if sync {
					_ = unix.Fsync(dfd)
				}
			}
		})
	}
}
