package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// sseEvent is one server-sent event.
type sseEvent struct {
	name  string
	id    string
	retry string
	data  []byte
}

var errEventTooLarge = errors.New("event exceeds the response size limit")

// sseReader reads events from a text/event-stream body.
type sseReader struct {
	br  *bufio.Reader
	max int64
	// more holds the lines after a bare CR, which ends a line as LF and CRLF do (the SSE specification,
	// and so EventSource and the TypeScript SDK): a CR inside a field is never passed on as a value.
	more [][]byte
}

// readers are reused: one event stream is read per proxied request.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

func newSSEReader(r io.Reader, limit int64) *sseReader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return &sseReader{br: br, max: limit}
}

// release returns the reader's buffer to the pool; the reader must not be used afterwards.
func (s *sseReader) release() {
	s.br.Reset(nil)
	readers.Put(s.br)
	s.br = nil
}

// next returns the next event; io.EOF at the end of the stream. Events without data (comments,
// keep-alives) are returned with empty data only if they carry an id or retry.
func (s *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	var data bytes.Buffer
	hasData, size := false, int64(0)
	for {
		if len(s.more) > 0 {
			line := s.more[0]
			s.more = s.more[1:]
			if done := s.field(&ev, &data, &hasData, line); done {
				ev.data = data.Bytes()
				return ev, nil
			}
			continue
		}
		line, err := s.readLine()
		if err != nil && len(line) == 0 {
			if errors.Is(err, io.EOF) && (hasData || ev.id != "") {
				ev.data = data.Bytes()
				return ev, nil
			}
			return ev, err
		}
		size += int64(len(line))
		if size > s.max {
			return ev, errEventTooLarge
		}
		if done := s.field(&ev, &data, &hasData, s.splitCR(line)); done {
			ev.data = data.Bytes()
			return ev, nil
		}
	}
}

// readLine reads one line up to and including its LF, whole however long it is; a line longer than
// the limit fails with errEventTooLarge (and no line).
func (s *sseReader) readLine() ([]byte, error) {
	line, err := s.br.ReadSlice('\n')
	if !errors.Is(err, bufio.ErrBufferFull) {
		return line, err
	}
	// a long line: collect it whole, within the limit
	full := append([]byte(nil), line...)
	for errors.Is(err, bufio.ErrBufferFull) {
		if int64(len(full)) > s.max {
			return nil, errEventTooLarge
		}
		line, err = s.br.ReadSlice('\n')
		full = append(full, line...)
	}
	return full, err
}

// splitCR strips the line ending (LF, CRLF) and returns the first of the lines a bare CR separates;
// the others are kept in s.more, to be read next.
func (s *sseReader) splitCR(line []byte) []byte {
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if bytes.IndexByte(line, '\r') < 0 {
		return line
	}
	parts := bytes.Split(line, []byte("\r"))
	for _, p := range parts[1:] {
		s.more = append(s.more, bytes.Clone(p))
	}
	return parts[0]
}

// field applies one line to the event being read and reports whether the line ends the event.
func (s *sseReader) field(ev *sseEvent, data *bytes.Buffer, hasData *bool, line []byte) bool {
	if len(line) == 0 {
		return *hasData || ev.id != "" || ev.retry != ""
	}
	if line[0] == ':' {
		return false // comment
	}
	field, value, _ := bytes.Cut(line, []byte(":"))
	value = bytes.TrimPrefix(value, []byte(" "))
	switch string(field) {
	case "event":
		ev.name = string(value)
	case "id":
		ev.id = string(value)
	case "retry":
		ev.retry = string(value)
	case "data":
		if *hasData {
			data.WriteByte('\n')
		}
		data.Write(value)
		*hasData = true
	}
	return false
}

// sseWriter writes events to the client.
type sseWriter struct {
	w http.ResponseWriter
	f http.Flusher
}

func newSSEWriter(w http.ResponseWriter) *sseWriter {
	f, _ := w.(http.Flusher)
	return &sseWriter{w: w, f: f}
}

func (s *sseWriter) writeFlush(ev sseEvent) error { return s.write(ev, true) }

// write writes one event, flushing it to the client if flush is set.
func (s *sseWriter) write(ev sseEvent, flush bool) error {
	var b strings.Builder
	if ev.name != "" {
		b.WriteString("event: " + ev.name + "\n")
	}
	if ev.id != "" {
		b.WriteString("id: " + ev.id + "\n")
	}
	if ev.retry != "" {
		b.WriteString("retry: " + ev.retry + "\n")
	}
	for _, l := range bytes.Split(ev.data, []byte("\n")) {
		b.WriteString("data: ")
		b.Write(l)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	if _, err := io.WriteString(s.w, b.String()); err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	if flush && s.f != nil {
		s.f.Flush()
	}
	return nil
}

func (s *sseWriter) flush() {
	if s.f != nil {
		s.f.Flush()
	}
}
