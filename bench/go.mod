module github.com/filestore-go/filestore/bench

go 1.25.0

require github.com/filestore-go/filestore v0.0.0

replace github.com/filestore-go/filestore => ..
