//go:build !linux

package filestore

// noATime is 0 where O_NOATIME does not exist: see openRecord.
const noATime = 0
