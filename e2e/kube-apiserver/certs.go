package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki holds the file paths and PEM bytes of everything generated for one run.
type pki struct {
	caCertFile      string
	servingCertFile string
	servingKeyFile  string
	saKeyFile       string // private key (signing)
	saPubFile       string // public key (verification)

	caCertPEM      []byte
	clientCertPEM  []byte
	clientKeyPEM   []byte // PKCS#8 "PRIVATE KEY"
	clientCertFile string
	clientKeyFile  string
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func pkcs8PEM(k crypto.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// generatePKI creates a fresh CA, a serving certificate for 127.0.0.1/localhost (and extraIP), an admin client
// certificate in system:masters and a service-account signing key, all under dir.
func generatePKI(dir string, extraIP net.IP) (*pki, error) {
	now := time.Now().Add(-5 * time.Minute) // tolerate small clock skew
	notAfter := now.Add(10 * 365 * 24 * time.Hour)

	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "namegate-kube-ca", Organization: []string{"namegate"}},
		NotBefore:             now,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}

	leaf := func(tmpl *x509.Certificate) (certPem, keyPem []byte, err error) {
		k, err := newKey()
		if err != nil {
			return nil, nil, err
		}
		sn, err := serial()
		if err != nil {
			return nil, nil, err
		}
		tmpl.SerialNumber = sn
		tmpl.NotBefore = now
		tmpl.NotAfter = notAfter
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.BasicConstraintsValid = true
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, k.Public(), caKey)
		if err != nil {
			return nil, nil, err
		}
		kp, err := pkcs8PEM(k)
		if err != nil {
			return nil, nil, err
		}
		return certPEM(der), kp, nil
	}

	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.0.0.1")}
	if extraIP != nil && !extraIP.IsLoopback() {
		ips = append(ips, extraIP)
	}
	servingCert, servingKey, err := leaf(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: ips,
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
	})
	if err != nil {
		return nil, fmt.Errorf("create serving cert: %w", err)
	}
	clientCert, clientKey, err := leaf(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "namegate-admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("create client cert: %w", err)
	}
	saKey, err := newKey()
	if err != nil {
		return nil, err
	}
	saKeyPEM, err := pkcs8PEM(saKey)
	if err != nil {
		return nil, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, err
	}
	saPubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})

	p := &pki{
		caCertFile:      filepath.Join(dir, "ca.crt"),
		servingCertFile: filepath.Join(dir, "apiserver.crt"),
		servingKeyFile:  filepath.Join(dir, "apiserver.key"),
		saKeyFile:       filepath.Join(dir, "sa.key"),
		saPubFile:       filepath.Join(dir, "sa.pub"),
		clientCertFile:  filepath.Join(dir, "admin.crt"),
		clientKeyFile:   filepath.Join(dir, "admin.key"),
		caCertPEM:       certPEM(caDER),
		clientCertPEM:   clientCert,
		clientKeyPEM:    clientKey,
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{p.caCertFile, p.caCertPEM, 0o644},
		{p.servingCertFile, servingCert, 0o644},
		{p.servingKeyFile, servingKey, 0o600},
		{p.saKeyFile, saKeyPEM, 0o600},
		{p.saPubFile, saPubPEM, 0o644},
		{p.clientCertFile, clientCert, 0o644},
		{p.clientKeyFile, clientKey, 0o600},
	} {
		if err := writeFile(f.path, f.data, f.mode); err != nil {
			return nil, err
		}
	}
	return p, nil
}
