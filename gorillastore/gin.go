package gorillastore

import "github.com/gorilla/sessions"

// GinOptions is satisfied by the Options type of
// github.com/gin-contrib/sessions, which converts itself to gorilla's.
type GinOptions interface {
	ToGorillaOptions() *sessions.Options
}

// GinStore adapts a Store to the Store interface of
// github.com/gin-contrib/sessions, which is sessions.Store plus a method
// Options(ginsessions.Options). That method cannot be declared on Store,
// whose Options field gorilla's stores share, and naming gin's type here
// would make this package depend on gin; so GinStore takes gin's Options
// type as its type argument, and the compiler checks the fit where it is
// used:
//
//	store := gorillastore.NewFilesystemStore(path, key)
//	router.Use(ginsessions.Sessions("session", gorillastore.GinStore[ginsessions.Options]{Store: store}))
//
// Its methods are those of the embedded *Store, plus Options.
type GinStore[O GinOptions] struct {
	*Store
}

// Options replaces the store's default session options with o, converted
// to gorilla's form, and applies o's MaxAge to the codecs as Store.MaxAge
// does. A nil conversion leaves the options as they were.
//
// Options modifies the Store: call it before the store serves requests, not
// concurrently with other methods.
func (g GinStore[O]) Options(o O) {
	opts := o.ToGorillaOptions()
	if opts == nil || g.Store == nil {
		return
	}
	g.Store.Options = opts
	g.Store.MaxAge(opts.MaxAge)
}
