// Package frameworktest checks, in a module of its own so that gin and echo
// stay out of gorillastore's dependencies, that gorillastore plugs into
// github.com/gin-contrib/sessions and github.com/labstack/echo-contrib/session.
// It has no code outside its tests.
package frameworktest
