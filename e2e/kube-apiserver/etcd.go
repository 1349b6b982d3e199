package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// quietCore drops every etcd log entry once shutdown has begun: closing the embedded server makes etcd
// log each closed listener as an error with a stack trace, which buries the real cause of a failure.
type quietCore struct {
	zapcore.Core
	closing *atomic.Bool
}

func (c quietCore) With(f []zapcore.Field) zapcore.Core { return quietCore{c.Core.With(f), c.closing} }

func (c quietCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.closing.Load() {
		return ce
	}
	return c.Core.Check(e, ce)
}

// etcdServer is a running embedded etcd.
type etcdServer struct {
	e          *embed.Etcd
	closing    *atomic.Bool
	url        string
	clientPort int
	peerPort   int
}

func (s *etcdServer) Close() {
	s.closing.Store(true)
	s.e.Close()
}

// freePort asks the kernel for a free 127.0.0.1 TCP port (bind :0, read, close). Another process can
// grab it before we bind it again; callers retry on "address already in use".
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startEtcd starts a single-member embedded etcd in a fresh data dir (mode 0700), retrying with new
// ports when one of them was taken in the meantime. With keep, an existing data dir is reused (the same
// cluster state) and the wanted ports are tried first (see keep.go).
func startEtcd(dataDir string, keep bool, want ports) (*etcdServer, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if !keep {
			if err := os.RemoveAll(dataDir); err != nil {
				return nil, err
			}
		}
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, err
		}
		if attempt > 0 {
			want = ports{} // the wanted ports failed once: take fresh ones
		}
		clientPort, err := portOrFree(want.etcdClient)
		if err != nil {
			return nil, err
		}
		peerPort, err := portOrFree(want.etcdPeer)
		if err != nil {
			return nil, err
		}
		clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
		peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}

		cfg := embed.NewConfig()
		cfg.Name = "namegate"
		cfg.Dir = dataDir
		cfg.ListenClientUrls = []url.URL{clientURL}
		cfg.AdvertiseClientUrls = []url.URL{clientURL}
		cfg.ListenPeerUrls = []url.URL{peerURL}
		cfg.AdvertisePeerUrls = []url.URL{peerURL}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		closing := new(atomic.Bool)
		core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
			zapcore.Lock(os.Stderr), zapcore.ErrorLevel)
		cfg.Logger = "zap"
		cfg.LogLevel = "error"
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(quietCore{core, closing}))
		cfg.UnsafeNoFsync = true // test cluster: durability across crashes is not wanted
		// Keep the backend small; the apiserver compacts every 5 minutes by itself.
		cfg.QuotaBackendBytes = 2 << 30

		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			logf("etcd start attempt %d failed: %v", attempt+1, err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		select {
		case <-e.Server.ReadyNotify():
			return &etcdServer{e: e, closing: closing, url: clientURL.String(),
				clientPort: clientPort, peerPort: peerPort}, nil
		case err := <-e.Err():
			closing.Store(true)
			e.Close()
			lastErr = err
			logf("etcd attempt %d failed: %v", attempt+1, err)
		case <-time.After(60 * time.Second):
			closing.Store(true)
			e.Close()
			return nil, fmt.Errorf("etcd did not become ready within 60s")
		}
	}
	return nil, fmt.Errorf("etcd: giving up after retries: %w", lastErr)
}
