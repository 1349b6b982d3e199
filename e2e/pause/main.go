// Command pause is the infrastructure ("sandbox") container of every pod in namegate's one-node test
// cluster (docs/kube-harness.md): it holds the pod's namespaces open and does nothing else, like the
// upstream registry.k8s.io/pause image, whose C program it follows. As PID 1 of the pod's PID namespace
// (when the namespace is shared) it reaps orphaned children; SIGINT and SIGTERM end it with status 0.
//
// Built with CGO_ENABLED=0 into a static binary, then packed into an image by scripts/image, so no image
// is ever pulled from a registry.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println("pause (namegate) 3.10")
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		switch s {
		case syscall.SIGCHLD:
			reap()
		default:
			fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", s)
			os.Exit(0)
		}
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
