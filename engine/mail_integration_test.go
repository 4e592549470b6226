//go:build integration

package engine_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"regflow/engine"
)

// tlsFiles writes a CA and a server certificate for 127.0.0.1 signed by
// it, and returns the paths of the CA, the certificate and the key.
func tlsFiles(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "regflow test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	caCert, _ := x509.ParseCertificate(caDER)
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", srvDER),
		write("key.pem", "EC PRIVATE KEY", keyDER)
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// tlsMailpit starts a Mailpit of the test's own with TLS and a password
// file; implicit selects TLS from the first byte instead of STARTTLS.
func tlsMailpit(t *testing.T, cert, key string, implicit bool) (smtpAddr, api string) {
	t.Helper()
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	bin := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "mailpit")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("mailpit is not installed at %s; run make test, which installs it", bin)
	}
	sum := sha1.Sum([]byte("s3cret"))
	auth := filepath.Join(t.TempDir(), "auth")
	os.WriteFile(auth, []byte("regflow:{SHA}"+base64.StdEncoding.EncodeToString(sum[:])+"\n"), 0o600)
	smtpAddr, httpAddr := freePort(t), freePort(t)
	args := []string{"--disable-version-check", "--smtp", smtpAddr, "--listen", httpAddr,
		"--smtp-tls-cert", cert, "--smtp-tls-key", key, "--smtp-auth-file", auth}
	if implicit {
		args = append(args, "--smtp-require-tls")
	} else {
		args = append(args, "--smtp-require-starttls")
	}
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", smtpAddr); err == nil {
			c.Close()
			break
		}
		if i > 100 {
			t.Fatalf("mailpit did not start:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return smtpAddr, "http://" + httpAddr
}

func sendOne(t *testing.T, rawURL, to string) error {
	t.Helper()
	cfg, err := engine.ParseSMTPURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout = 5 * time.Second
	m, err := engine.NewSMTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	return m.Send(context.Background(), &engine.Mail{From: "rc@example.edu", To: []string{to}, Subject: "tls", Text: "hi\n"})
}

func received(t *testing.T, api, to string) int {
	t.Helper()
	resp, err := http.Get(api + "/api/v1/search?query=" + url.QueryEscape("to:"+to))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res struct {
		MessagesCount int `json:"messages_count"`
	}
	json.NewDecoder(resp.Body).Decode(&res)
	return res.MessagesCount
}

// TestSMTPTLS sends over STARTTLS and over implicit TLS with a login,
// trusting a private CA, and checks the refusals that must not be retried:
// an untrusted certificate and a wrong password (C9).
func TestSMTPTLS(t *testing.T) {
	ca, cert, key := tlsFiles(t)
	addr, api := tlsMailpit(t, cert, key, false)

	if err := sendOne(t, "smtp://regflow:s3cret@"+addr+"?ca="+ca, "starttls@example.org"); err != nil {
		t.Fatalf("STARTTLS with a trusted CA and the right password: %v", err)
	}
	if n := received(t, api, "starttls@example.org"); n != 1 {
		t.Fatalf("the server holds %d mails, want 1", n)
	}

	err := sendOne(t, "smtp://regflow:wrong@"+addr+"?ca="+ca, "wrong@example.org")
	if err == nil || engine.IsTransient(err) || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("a wrong password: %v (transient %v); want a permanent authentication failure", err, engine.IsTransient(err))
	}

	err = sendOne(t, "smtp://regflow:s3cret@"+addr, "untrusted@example.org")
	if err == nil || engine.IsTransient(err) || !strings.Contains(err.Error(), "not trusted") {
		t.Fatalf("an untrusted certificate: %v; want a permanent error saying so", err)
	}
	if !errors.Is(err, engine.ErrPermanent) {
		t.Fatalf("an untrusted certificate is not marked permanent: %v", err)
	}
	if n := received(t, api, "wrong@example.org") + received(t, api, "untrusted@example.org"); n != 0 {
		t.Fatalf("%d refused mails arrived anyway", n)
	}

	addr, api = tlsMailpit(t, cert, key, true)
	if err := sendOne(t, fmt.Sprintf("smtps://regflow:s3cret@%s?ca=%s", addr, ca), "smtps@example.org"); err != nil {
		t.Fatalf("implicit TLS: %v", err)
	}
	if n := received(t, api, "smtps@example.org"); n != 1 {
		t.Fatalf("implicit TLS: the server holds %d mails, want 1", n)
	}
}
