module github.com/filestore-go/filestore/bench

go 1.25.0

require (
	github.com/alexedwards/scs/v2 v2.9.0
	github.com/filestore-go/filestore v0.1.0
	github.com/gorilla/sessions v1.4.0
	github.com/peterbourgon/diskv/v3 v3.0.1
	go.etcd.io/bbolt v1.5.0
	golang.org/x/sys v0.47.0
)

require (
	github.com/gofrs/flock v0.13.1 // indirect
	github.com/google/btree v1.0.0 // indirect
	github.com/gorilla/securecookie v1.1.2 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
)
