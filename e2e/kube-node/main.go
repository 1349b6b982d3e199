// Command namegate-kube-node is the rest of a Kubernetes node for namegate's one-node test cluster
// (docs/kube-harness.md, "The one-node cluster"): the upstream kubelet, kube-controller-manager,
// kube-scheduler and kube-proxy, built from the same k8s.io/kubernetes module version as
// e2e/kube-apiserver, in one multi-call binary (as k3s does), so the four share one link and one
// cached file under target/.
//
//	namegate-kube-node kubelet|kube-controller-manager|kube-scheduler|kube-proxy [upstream flags]
//	namegate-kube-node cri-reset --endpoint unix:///…/containerd.sock   (see cri.go)
//
// Each sub-command is exactly the upstream main of cmd/<component>: the cobra command is built by the
// component's app package and run by component-base/cli, so flags, config files and behaviour are the
// upstream ones. scripts/cluster-up starts one process per component.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	_ "time/tzdata" // CronJob time zones (as upstream cmd/kube-controller-manager)

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format registration (as upstream)
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics plugins (as upstream)
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric registration (as upstream)
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

var components = map[string]func() *cobra.Command{
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
	"kube-controller-manager": func() *cobra.Command { return controllermanager.NewControllerManagerCommand() },
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kube-proxy":              func() *cobra.Command { return proxy.NewProxyCommand() },
}

func usage() {
	names := make([]string, 0, len(components))
	for n := range components {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: %s %s [flags]\n", filepath.Base(os.Args[0]), strings.Join(names, "|"))
}

func main() {
	// Called through a symlink named after a component (busybox style) or with the component first.
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if _, ok := components[name]; !ok {
		if len(args) == 0 {
			usage()
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	if name == "cri-reset" {
		os.Exit(criReset(args))
	}
	newCommand, ok := components[name]
	if !ok {
		usage()
		os.Exit(2)
	}
	command := newCommand()
	command.SetArgs(args)
	os.Exit(cli.Run(command))
}
