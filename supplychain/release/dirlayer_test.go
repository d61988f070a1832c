package release_test

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/mcp-warden/mcp-warden/supplychain/release"
)

// TestDirLayerPacksATreeReproducibly: a directory tree becomes a layer whose entries carry fixed modes,
// owner root and the epoch, with symbolic links kept; packing the same content again (other timestamps,
// other permission bits) gives the same digest; a file of another type is refused by name.
func TestDirLayerPacksATreeReproducibly(t *testing.T) {
	epoch := time.Unix(0, 0).UTC()
	a, b := writeTree(t, 0, time.Now()), writeTree(t, 0o055, time.Now().Add(-time.Hour))
	la, err := release.DirLayer(a, filepath.Join(t.TempDir(), "a.tar.gz"), epoch)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := release.DirLayer(b, filepath.Join(t.TempDir(), "b.tar.gz"), epoch)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := la.Digest()
	db, _ := lb.Digest()
	if da != db {
		t.Errorf("the same tree packed twice: digests %s and %s", da, db)
	}
	got := layerHeaders(t, la, epoch)
	want := map[string]int64{"app/": 0o755, "app/index.js": 0o644, "usr/": 0o755, "usr/local/bin/node": 0o755, "usr/local/node": 0o777}
	for name, mode := range want {
		if h := got[name]; h == nil || h.Mode != mode {
			t.Errorf("entry %s: %+v, want mode %o", name, h, mode)
		}
	}
	if h := got["usr/local/node"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "../local/bin/node" {
		t.Errorf("the symbolic link must be kept: %+v", h)
	}
	if err := syscall.Mkfifo(filepath.Join(a, "app", "fifo"), 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	_, err = release.DirLayer(a, filepath.Join(t.TempDir(), "c.tar.gz"), epoch)
	if err == nil || !strings.Contains(err.Error(), "app/fifo") || !strings.Contains(err.Error(), "only directories, regular files and symbolic links") {
		t.Errorf("a named pipe in the tree: %v; want a refusal naming it", err)
	}
}

// writeTree writes a small tree (an executable, a file and a symbolic link) whose files have the
// extra mode bits and modification time given.
func writeTree(t *testing.T, mode os.FileMode, mtime time.Time) string {
	t.Helper()
	dir := t.TempDir()
	for p, m := range map[string]os.FileMode{"usr/local/bin/node": 0o700 | mode, "app/index.js": 0o600 | mode&0o066} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(p), m); err != nil {
			t.Fatal(err)
		}
		_ = os.Chtimes(filepath.Join(dir, p), mtime, mtime)
	}
	if err := os.Symlink("../local/bin/node", filepath.Join(dir, "usr/local/node")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// layerHeaders returns the tar headers of a layer by name, checking that each is owned by 0:0 and
// dated at the epoch.
func layerHeaders(t *testing.T, l v1.Layer, epoch time.Time) map[string]*tar.Header {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(epoch) {
			t.Errorf("%s: owner %d:%d, time %s; want 0:0 and the epoch", h.Name, h.Uid, h.Gid, h.ModTime)
		}
	}
}
