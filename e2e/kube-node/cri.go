package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	remote "k8s.io/cri-client/pkg"
)

// criReset stops and removes every pod sandbox of a CRI runtime (what `crictl rmp -fa` does; Debian has
// no crictl): the runtime kills the containers and runs the CNI DEL, so the veths, the IPAM leases and
// the pod network namespaces go away. scripts/cluster-down calls it after the kubelet has stopped and
// before containerd stops.
func criReset(args []string) int {
	fs := flag.NewFlagSet("cri-reset", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "", "CRI endpoint, e.g. unix:///path/containerd.sock")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *endpoint == "" {
		fmt.Fprintln(os.Stderr, "cri-reset: --endpoint is required")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	svc, err := remote.NewRemoteRuntimeService(ctx, *endpoint, 10*time.Second, noop.NewTracerProvider(), false)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cri-reset: connect %s: %v\n", *endpoint, err)
		return 1
	}
	sandboxes, err := svc.ListPodSandbox(ctx, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cri-reset: list pod sandboxes: %v\n", err)
		return 1
	}
	failed := 0
	for _, s := range sandboxes {
		name := s.GetMetadata().GetNamespace() + "/" + s.GetMetadata().GetName()
		if err := svc.StopPodSandbox(ctx, s.GetId()); err != nil {
			fmt.Fprintf(os.Stderr, "cri-reset: stop %s: %v\n", name, err)
			failed++
			continue
		}
		if err := svc.RemovePodSandbox(ctx, s.GetId()); err != nil {
			fmt.Fprintf(os.Stderr, "cri-reset: remove %s: %v\n", name, err)
			failed++
			continue
		}
		fmt.Fprintf(os.Stderr, "cri-reset: removed pod sandbox %s\n", name)
	}
	if failed > 0 {
		return 1
	}
	return 0
}
