// Command namegate-kube-apiserver runs a real, upstream kube-apiserver (k8s.io/kubernetes, built from Go
// modules) together with an embedded single-member etcd in one process, for namegate's e2e tests and demo.
//
// It generates its own PKI under --dir, waits until the server is ready and the bootstrap objects exist,
// then writes <dir>/kubeconfig atomically (admin = system:masters) and prints one line
// "KUBECONFIG=<path>" on stdout. Everything else goes to stderr. SIGTERM/SIGINT (and, with
// --exit-with-parent, the death of the parent process) stop the apiserver, close etcd and remove its data
// (unless --keep-data: then a restart with the same --dir resumes the same cluster, see keep.go).
//
// Extra kube-apiserver flags may be passed after "--".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // for timeZone support in CronJob (as upstream cmd/kube-apiserver)

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format registration (as upstream)
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics plugins (as upstream)
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric registration (as upstream)
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

const retryEnv = "NAMEGATE_KUBE_PORT_RETRY"

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "namegate-kube: "+format+"\n", args...)
}

func main() {
	os.Exit(run())
}

func run() int {
	defaultDir := filepath.Join(os.TempDir(), "namegate-kube")
	dir := flag.String("dir", defaultDir, "state directory (PKI, etcd data, kubeconfig, pid)")
	exitWithParent := flag.Bool("exit-with-parent", false, "shut down when the parent process exits")
	readyTimeout := flag.Duration("ready-timeout", 180*time.Second, "how long to wait for the apiserver to become ready")
	verbosity := flag.Int("v", 0, "kube-apiserver log verbosity (--v)")
	runtimeConfig := flag.String("runtime-config", "api/all=true", "kube-apiserver --runtime-config (empty: server default)")
	keepData := flag.Bool("keep-data", false, "keep the etcd data and the PKI in --dir and reuse the recorded ports, "+
		"so a restart with the same --dir resumes the same cluster with the same kubeconfig")
	address := flag.String("address", "127.0.0.1", "IP the apiserver binds to and advertises (added to the serving cert); "+
		"a non-loopback address also turns on the lease endpoint reconciler, so the `kubernetes` Service "+
		"routes to it (the one-node cluster of scripts/cluster-up uses its bridge address)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [flags] [-- extra kube-apiserver flags]\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	extraArgs := flag.Args()

	bindIP := net.ParseIP(*address)
	if bindIP == nil || bindIP.To4() == nil {
		logf("bad --address %q: need an IPv4 address", *address)
		return 2
	}

	stateDir, err := filepath.Abs(*dir)
	if err != nil {
		logf("bad --dir: %v", err)
		return 2
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		logf("create %s: %v", stateDir, err)
		return 1
	}

	// One server per state dir. The lock is released by the kernel when the process dies.
	lock, err := os.OpenFile(filepath.Join(stateDir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		logf("open lock: %v", err)
		return 1
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		logf("another namegate-kube-apiserver is running with --dir %s (%v)", stateDir, err)
		return 1
	}

	kubeconfigPath := filepath.Join(stateDir, "kubeconfig")
	pidPath := filepath.Join(stateDir, "pid")
	etcdDir := filepath.Join(stateDir, "etcd")
	_ = os.Remove(kubeconfigPath)
	if err := writeFile(pidPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		logf("write pid: %v", err)
		return 1
	}

	// Our own view of the shutdown signals. The apiserver installs its own handler too (inside
	// NewAPIServerCommand); os/signal delivers to both. Created before anything slow starts.
	sigCh := make(chan os.Signal, 2)
	signal.Notify(sigCh, syscall.SIGTERM, syscall.SIGINT)

	if *exitWithParent {
		go watchParent()
	}

	cleanup := func(removeState bool) {
		if !*keepData {
			_ = os.RemoveAll(etcdDir)
		}
		if removeState {
			_ = os.Remove(kubeconfigPath)
			_ = os.Remove(pidPath)
		}
	}

	// NewAPIServerCommand sets up the apiserver's signal context; it may be called only once per process.
	cmd := app.NewAPIServerCommand()

	var want ports
	var p *pki
	if *keepData {
		want = readPorts(stateDir)
		if p, err = loadPKI(stateDir); err != nil {
			logf("--keep-data: no usable PKI in %s (%v); generating one", stateDir, err)
			p = nil
		}
	}
	if p == nil {
		if p, err = generatePKI(stateDir, bindIP); err != nil {
			logf("PKI: %v", err)
			cleanup(true)
			return 1
		}
	}

	etcd, err := startEtcd(etcdDir, *keepData, want)
	if err != nil {
		logf("%v", err)
		cleanup(true)
		return 1
	}
	etcdURL := etcd.url
	logf("etcd ready at %s", etcdURL)
	stopEtcd := etcd.Close

	port, err := portOrFree(want.apiserver)
	if err != nil {
		logf("free port: %v", err)
		stopEtcd()
		cleanup(true)
		return 1
	}
	server := fmt.Sprintf("https://%s:%d", bindIP, port)
	if *keepData {
		if err := writePorts(stateDir, ports{apiserver: port, etcdClient: etcd.clientPort, etcdPeer: etcd.peerPort}); err != nil {
			logf("write ports: %v", err)
			stopEtcd()
			cleanup(true)
			return 1
		}
	}

	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + bindIP.String(),
		"--advertise-address=" + bindIP.String(),
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(stateDir, "certs"),
		"--tls-cert-file=" + p.servingCertFile,
		"--tls-private-key-file=" + p.servingKeyFile,
		"--client-ca-file=" + p.caCertFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-signing-key-file=" + p.saKeyFile,
		"--service-account-key-file=" + p.saPubFile,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--endpoint-reconciler-type=" + endpointReconciler(bindIP),
		"--profiling=false",
		"--v=" + strconv.Itoa(*verbosity),
	}
	if *runtimeConfig != "" {
		args = append(args, "--runtime-config="+*runtimeConfig)
	}
	args = append(args, extraArgs...)
	cmd.SetArgs(args)

	select {
	case s := <-sigCh:
		logf("received %v before the apiserver started; exiting", s)
		stopEtcd()
		cleanup(true)
		return 0
	default:
	}

	logf("starting kube-apiserver on %s", server)
	apiDone := make(chan error, 1)
	go func() { apiDone <- cli.RunNoErrOutput(cmd) }()

	readyCtx, cancelReady := context.WithTimeout(context.Background(), *readyTimeout)
	defer cancelReady()
	readyErr := make(chan error, 1)
	go func() {
		c, err := adminClient(p)
		if err == nil {
			err = waitReady(readyCtx, c, server)
		}
		if err == nil {
			err = writeFile(kubeconfigPath, kubeconfigYAML(p, server), 0o600)
		}
		readyErr <- err
	}()

	exitCode := 0
	ready := false
loop:
	for {
		select {
		case err := <-readyErr:
			if err != nil {
				logf("apiserver did not become ready: %v", err)
				exitCode = 1
				_ = syscall.Kill(os.Getpid(), syscall.SIGTERM) // let the apiserver shut down
				waitAPI(apiDone, 30*time.Second)
				break loop
			}
			ready = true
			logf("ready: %s (kubeconfig %s)", server, kubeconfigPath)
			fmt.Printf("KUBECONFIG=%s\n", kubeconfigPath)
		case s := <-sigCh:
			logf("received %v; shutting down", s)
			cancelReady()
			waitAPI(apiDone, 30*time.Second)
			break loop
		case err := <-apiDone:
			cancelReady()
			if err == nil {
				logf("kube-apiserver exited")
				break loop
			}
			logf("kube-apiserver failed: %v", err)
			exitCode = 1
			if !ready && isAddrInUse(err) {
				n, _ := strconv.Atoi(os.Getenv(retryEnv))
				if n < 3 {
					// The port was grabbed between freePort and bind. NewAPIServerCommand can run only
					// once per process, so start over in a fresh image (same pid).
					logf("port clash; restarting (retry %d)", n+1)
					stopEtcd()
					cleanup(false)
					_ = lock.Close()
					_ = os.Setenv(retryEnv, strconv.Itoa(n+1))
					self, _ := os.Executable()
					err := syscall.Exec(self, os.Args, os.Environ())
					logf("re-exec failed: %v", err)
					return 1
				}
			}
			break loop
		}
	}

	_ = os.Remove(kubeconfigPath) // not usable any more
	stopEtcd()
	cleanup(true)
	logf("stopped")
	return exitCode
}

// endpointReconciler: 127.0.0.1 is not a valid Endpoints IP, so on loopback the `kubernetes` Service has
// no endpoints (reconciler none); on a real address the upstream default (lease) maintains them.
func endpointReconciler(ip net.IP) string {
	if ip.IsLoopback() {
		return "none"
	}
	return "lease"
}

func waitAPI(apiDone <-chan error, d time.Duration) {
	select {
	case err := <-apiDone:
		if err != nil {
			logf("kube-apiserver: %v", err)
		}
	case <-time.After(d):
		logf("kube-apiserver did not stop within %v; closing etcd anyway", d)
	}
}

func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// watchParent sends SIGTERM to this process when the parent process goes away (the process is then
// re-parented, so getppid changes). Polling is used instead of PR_SET_PDEATHSIG because the latter fires
// when the parent *thread* that spawned us exits, which in multi-threaded parents (Rust test harnesses)
// happens long before the parent process ends.
func watchParent() {
	ppid := os.Getppid()
	if ppid == 1 {
		logf("--exit-with-parent: already orphaned (ppid 1); ignoring")
		return
	}
	for {
		time.Sleep(time.Second)
		if os.Getppid() != ppid {
			logf("parent process %d exited; shutting down", ppid)
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
			return
		}
	}
}
