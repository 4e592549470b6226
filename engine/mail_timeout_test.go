package engine

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// stallingSMTP is an SMTP server that accepts everything up to DATA and
// then never answers, as an overloaded relay can.
func stallingSMTP(t *testing.T) (host string, port int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				conn.Write([]byte("220 stall.test ESMTP\r\n"))
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch cmd := strings.ToUpper(strings.TrimSpace(line)); {
					case strings.HasPrefix(cmd, "EHLO"):
						conn.Write([]byte("250-stall.test\r\n250 8BITMIME\r\n"))
					case strings.HasPrefix(cmd, "DATA"):
						io.Copy(io.Discard, r) // never answers; waits for the client to hang up
						return
					case strings.HasPrefix(cmd, "QUIT"):
						conn.Write([]byte("221 bye\r\n"))
						return
					default:
						conn.Write([]byte("250 ok\r\n"))
					}
				}
			}()
		}
	}()
	a := ln.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port
}

// TestSMTPHonoursStepTimeout: a server that stops answering holds a send
// no longer than the step's deadline, although the SMTP timeout is longer,
// and the failure is transient, so the step is retried.
func TestSMTPHonoursStepTimeout(t *testing.T) {
	host, port := stallingSMTP(t)
	s, err := NewSMTP(&SMTPConfig{Host: host, Port: port, TLS: TLSNone, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := &Mail{From: "a@example.org", To: []string{"b@example.org"}, Subject: "s", Text: "t", ID: "x"}

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	err = s.Send(ctx, m)
	took := time.Since(start)
	if err == nil {
		t.Fatal("a send to a server that never answers DATA succeeded")
	}
	if took > 5*time.Second {
		t.Errorf("the send took %s with a 1s step deadline", took.Round(time.Millisecond))
	}
	if !IsTransient(err) {
		t.Errorf("error %v is not transient", err)
	}

	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	if err := s.Send(expired, m); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("send after the deadline: %v", err)
	}
}
