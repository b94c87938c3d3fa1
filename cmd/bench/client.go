package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
)

// leanConn is a minimal HTTP/1.1 keep-alive client for the ingest phases.
// net/http's client costs about as much CPU per request as the service's
// own handling, and the load generator shares the machine's cores with the
// service and PostgreSQL; this one writes a request with one syscall and
// parses only the status line and Content-Length, so nearly all CPU left
// goes to the system under test.
type leanConn struct {
	addr string
	host string
	c    net.Conn
	r    *bufio.Reader
	buf  []byte
	body []byte
}

func newLeanConn(base string) (*leanConn, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	return &leanConn{addr: u.Host, host: u.Host}, nil
}

func (l *leanConn) close() {
	if l.c != nil {
		l.c.Close()
		l.c = nil
	}
}

// post sends one request and returns the status and body (valid until the
// next call).
func (l *leanConn) post(path, token string, body []byte) (int, []byte, error) {
	for attempt := 0; ; attempt++ {
		status, resp, err := l.try(path, token, body)
		if err == nil || attempt == 1 {
			return status, resp, err
		}
		// A kept-alive connection the server closed: reconnect once.
		l.close()
	}
}

func (l *leanConn) try(path, token string, body []byte) (int, []byte, error) {
	if l.c == nil {
		c, err := net.Dial("tcp", l.addr)
		if err != nil {
			return 0, nil, err
		}
		l.c, l.r = c, bufio.NewReaderSize(c, 16<<10)
	}
	b := l.buf[:0]
	b = append(b, "POST "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, l.host...)
	b = append(b, "\r\nAuthorization: Bearer "...)
	b = append(b, token...)
	b = append(b, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	l.buf = b
	if _, err := l.c.Write(b); err != nil {
		return 0, nil, err
	}
	line, err := l.r.ReadSlice('\n')
	if err != nil {
		return 0, nil, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, nil, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, fmt.Errorf("bad status line %q", line)
	}
	length, closing := -1, false
	for {
		line, err := l.r.ReadSlice('\n')
		if err != nil {
			return 0, nil, err
		}
		if len(line) <= 2 {
			break
		}
		k, v, ok := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(v)); err != nil {
				return 0, nil, err
			}
		case bytes.EqualFold(k, []byte("Connection")) && bytes.EqualFold(v, []byte("close")):
			closing = true
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			return 0, nil, errors.New("chunked responses are not supported by the lean client")
		}
	}
	if length < 0 {
		return 0, nil, errors.New("response without Content-Length")
	}
	if cap(l.body) < length {
		l.body = make([]byte, length)
	}
	l.body = l.body[:length]
	if _, err := io.ReadFull(l.r, l.body); err != nil {
		return 0, nil, err
	}
	if closing {
		l.close()
	}
	return status, l.body, nil
}
