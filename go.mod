module github.com/filestore-go/filestore

go 1.25.0

require (
	github.com/gofrs/flock v0.13.1
	github.com/klauspost/compress v1.20.3
)

require golang.org/x/sys v0.47.0 // indirect
