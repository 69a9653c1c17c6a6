module github.com/filestore-go/filestore/scsstore

go 1.25.0

require github.com/filestore-go/filestore v0.1.0

require github.com/fsnotify/fsnotify v1.10.1 // indirect

require (
	github.com/alexedwards/scs/v2 v2.9.0
	github.com/gofrs/flock v0.13.1 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	golang.org/x/sys v0.47.0 // indirect
)
