module github.com/filestore-go/filestore/gorillastore

go 1.25.0

require (
	github.com/filestore-go/filestore v0.1.0
	github.com/gorilla/securecookie v1.1.2
	github.com/gorilla/sessions v1.4.0
)

require (
	github.com/gofrs/flock v0.13.1 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	golang.org/x/sys v0.47.0 // indirect
)
