module github.com/filestore-go/filestore/examples/demo

go 1.25.0

require (
	github.com/alexedwards/scs/v2 v2.9.0
	github.com/chromedp/cdproto v0.159.0
	github.com/chromedp/chromedp v0.23.0
	github.com/filestore-go/filestore v0.1.0
	github.com/filestore-go/filestore/scsstore v0.1.0
	golang.org/x/sys v0.47.0
)

require (
	github.com/fsnotify/fsnotify v1.10.1 // indirect
	github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect
	github.com/gofrs/flock v0.13.1 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
)
