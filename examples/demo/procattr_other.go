//go:build !unix

package main

import "syscall"

func workerAttr() *syscall.SysProcAttr { return nil }
