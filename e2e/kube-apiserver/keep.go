package main

// --keep-data: a restart with the same --dir resumes the same cluster. The etcd data dir and the PKI are
// kept, and the ports (apiserver, etcd client, etcd peer) are recorded in <dir>/ports and reused when they
// are still free, so the kubeconfig written by the previous run (same server URL, same CA and admin
// credentials) stays valid for clients that loaded it before the restart.

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ports are the TCP ports of one run; 0 = not recorded.
type ports struct {
	apiserver, etcdClient, etcdPeer int
}

func portsPath(dir string) string { return filepath.Join(dir, "ports") }

// readPorts reads <dir>/ports ("apiserver=N" lines); missing or malformed entries are 0.
func readPorts(dir string) ports {
	var p ports
	data, err := os.ReadFile(portsPath(dir))
	if err != nil {
		return p
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 65535 {
			continue
		}
		switch k {
		case "apiserver":
			p.apiserver = n
		case "etcd-client":
			p.etcdClient = n
		case "etcd-peer":
			p.etcdPeer = n
		}
	}
	return p
}

func writePorts(dir string, p ports) error {
	text := fmt.Sprintf("apiserver=%d\netcd-client=%d\netcd-peer=%d\n", p.apiserver, p.etcdClient, p.etcdPeer)
	return writeFile(portsPath(dir), []byte(text), 0o644)
}

// portOrFree returns want if it is non-zero and can be bound on 127.0.0.1 right now, else a fresh free
// port. As with freePort, the port can be taken again before it is used; callers retry.
func portOrFree(want int) (int, error) {
	if want > 0 {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", want))
		if err == nil {
			_ = l.Close()
			return want, nil
		}
		logf("--keep-data: recorded port %d is taken (%v); picking another", want, err)
	}
	return freePort()
}

// loadPKI reads the PKI a previous run wrote to dir. It fails unless every file is present and the
// serving and admin certificates were issued by the CA found next to them.
func loadPKI(dir string) (*pki, error) {
	p := &pki{
		caCertFile:      filepath.Join(dir, "ca.crt"),
		servingCertFile: filepath.Join(dir, "apiserver.crt"),
		servingKeyFile:  filepath.Join(dir, "apiserver.key"),
		saKeyFile:       filepath.Join(dir, "sa.key"),
		saPubFile:       filepath.Join(dir, "sa.pub"),
		clientCertFile:  filepath.Join(dir, "admin.crt"),
		clientKeyFile:   filepath.Join(dir, "admin.key"),
	}
	for _, f := range []string{p.servingKeyFile, p.saKeyFile, p.saPubFile} {
		if _, err := os.Stat(f); err != nil {
			return nil, err
		}
	}
	var err error
	if p.caCertPEM, err = os.ReadFile(p.caCertFile); err != nil {
		return nil, err
	}
	if p.clientCertPEM, err = os.ReadFile(p.clientCertFile); err != nil {
		return nil, err
	}
	if p.clientKeyPEM, err = os.ReadFile(p.clientKeyFile); err != nil {
		return nil, err
	}
	servingPEM, err := os.ReadFile(p.servingCertFile)
	if err != nil {
		return nil, err
	}
	ca, err := parseCert(p.caCertPEM)
	if err != nil {
		return nil, fmt.Errorf("ca.crt: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for name, data := range map[string][]byte{"apiserver.crt": servingPEM, "admin.crt": p.clientCertPEM} {
		c, err := parseCert(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return nil, fmt.Errorf("%s does not chain to ca.crt: %w", name, err)
		}
	}
	return p, nil
}

func parseCert(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}
