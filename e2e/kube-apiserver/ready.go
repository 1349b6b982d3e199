package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"time"
)

func adminClient(p *pki) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.caCertPEM) {
		return nil, fmt.Errorf("bad CA PEM")
	}
	cert, err := tls.X509KeyPair(p.clientCertPEM, p.clientKeyPEM)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{
				RootCAs:      pool,
				Certificates: []tls.Certificate{cert},
				ServerName:   "127.0.0.1",
				MinVersion:   tls.VersionTLS12,
			},
			DisableKeepAlives: true,
		},
	}, nil
}

// waitReady polls until /readyz answers 200 and the bootstrap objects exist.
func waitReady(ctx context.Context, c *http.Client, server string) error {
	paths := []string{
		"/readyz",
		"/api/v1/namespaces/default",
		"/api/v1/namespaces/kube-system",
		"/apis/rbac.authorization.k8s.io/v1/clusterroles/cluster-admin",
	}
	for _, p := range paths {
		var last string
		for {
			resp, err := c.Get(server + p)
			if err == nil {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body)
			} else {
				last = err.Error()
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for %s: %w (last: %s)", p, ctx.Err(), last)
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	return nil
}

func kubeconfigYAML(p *pki, server string) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: namegate
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: namegate-admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: namegate
  context:
    cluster: namegate
    user: namegate-admin
    namespace: default
current-context: namegate
preferences: {}
`, server, b64(p.caCertPEM), b64(p.clientCertPEM), b64(p.clientKeyPEM)))
}
