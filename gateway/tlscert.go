package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// maxPEMBytes bounds a certificate or key file read (a chain of a few certificates is a few KiB).
const maxPEMBytes = 64 << 10

// CertReloader serves a certificate and key from PEM files and reads them again when they change, so a
// renewed certificate (the kubelet swaps a mounted Secret's files atomically) is served on the next
// handshake without a restart. The files are polled rather than watched with inotify: the kubelet
// replaces a Secret volume by swapping a symlink, which an inotify watch on the file itself misses, and
// a stat every few seconds costs nothing. A pair that does not load (half written, key not matching) is
// logged and the last good pair kept.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu              sync.RWMutex
	cert            *tls.Certificate
	certPEM, keyPEM []byte
}

// NewCertReloader loads the pair once; it fails if the files do not hold a certificate and its key.
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: log}
	if _, err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again and reports whether the served certificate changed; on an error the
// previous certificate stays.
func (r *CertReloader) Reload() (bool, error) {
	certPEM, err := readBounded(r.certFile)
	if err != nil {
		return false, err
	}
	keyPEM, err := readBounded(r.keyFile)
	if err != nil {
		return false, err
	}
	r.mu.RLock()
	same := bytes.Equal(certPEM, r.certPEM) && bytes.Equal(keyPEM, r.keyPEM)
	r.mu.RUnlock()
	if same {
		return false, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("tls: %s and %s: %w", r.certFile, r.keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return false, fmt.Errorf("tls: %s: %w", r.certFile, err)
		}
	}
	r.mu.Lock()
	r.cert, r.certPEM, r.keyPEM = &cert, certPEM, keyPEM
	r.mu.Unlock()
	return true, nil
}

// Run polls the files every interval until ctx ends.
func (r *CertReloader) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := r.Reload()
		switch {
		case err != nil:
			r.log.Warn("serving certificate not reloaded; the previous one is served", "err", err)
		case changed:
			leaf := r.Leaf()
			r.log.Info("serving certificate reloaded", "notAfter", leaf.NotAfter, "serial", leaf.SerialNumber.String())
		}
	}
}

// Leaf is the certificate being served.
func (r *CertReloader) Leaf() *x509.Certificate {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert.Leaf
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.cert == nil {
		return nil, errors.New("no serving certificate")
	}
	return r.cert, nil
}

// ServerTLSConfig is the gateway's TLS configuration: TLS 1.2 or later (1.3 preferred by Go's
// negotiation), forward-secret AEAD suites only for 1.2. http.Server.ServeTLS adds HTTP/2.
func (r *CertReloader) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEMBytes+1))
	if err != nil {
		return nil, fmt.Errorf("tls: read %s: %w", path, err)
	}
	if len(b) > maxPEMBytes {
		return nil, fmt.Errorf("tls: %s is larger than %d bytes", path, maxPEMBytes)
	}
	return b, nil
}
