module github.com/filestore-go/filestore/gorillastore

go 1.25.0

require github.com/filestore-go/filestore v0.0.0

require (
	github.com/gorilla/securecookie v1.1.2 // indirect
	github.com/gorilla/sessions v1.4.0 // indirect
)

replace github.com/filestore-go/filestore => ..
