package imageverify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
)

// hostileRegistry serves an image whose signature manifest lists layers signature layers of size
// bytes each, and streams that many bytes (without a Content-Length) for every blob.
func hostileRegistry(t *testing.T, layers int, size int64) (*httptest.Server, string) {
	t.Helper()
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	image := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}`
	var descs []map[string]any
	for i := range layers {
		descs = append(descs, map[string]any{
			"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "size": size,
			"digest":      fmt.Sprintf("sha256:%064x", i+1),
			"annotations": map[string]string{"dev.cosignproject.cosign/signature": "MEUCIQ=="},
		})
	}
	sig, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
		"layers": descs,
	})
	zeros := make([]byte, 64<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.Contains(p, "/manifests/sha256-"):
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			_, _ = w.Write(sig)
		case strings.Contains(p, "/manifests/"):
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			_, _ = w.Write([]byte(image))
		case strings.Contains(p, "/blobs/"):
			w.WriteHeader(http.StatusOK)
			for sent := int64(0); sent < size; sent += int64(len(zeros)) {
				if _, err := w.Write(zeros); err != nil {
					return
				}
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, srv.Listener.Addr().String() + "/acme/x@" + digest
}

// TestHugeSignatureLayersAreRefused: three 100 MiB "signature" layers (each under cosign's own
// attachment limit) are refused after 1 MiB, and the heap does not grow with them.
func TestHugeSignatureLayersAreRefused(t *testing.T) {
	srv, ref := hostileRegistry(t, 3, 100<<20)
	p := imageverify.Policy{Name: "prod", Identity: "huge", Registries: []string{srv.Listener.Addr().String()},
		Authorities: []imageverify.Authority{{Name: "release-key", PublicKey: newFixture(t).release.Public()}}}
	v := imageverify.New(imageverify.Options{})

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	peak := uint64(0)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				peak = max(peak, m.HeapAlloc)
			}
		}
	}()
	_, err := v.Verify(context.Background(), ref, []imageverify.Policy{p})
	close(done)
	runtime.ReadMemStats(&after)
	denial(t, err, imageverify.CheckTooLarge, "exceeds the 1048576-byte limit")
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %.1f MiB during the verification; heap peak %.1f MiB over a %.1f MiB baseline",
		float64(allocated)/(1<<20), float64(peak)/(1<<20), float64(before.HeapAlloc)/(1<<20))
	if allocated > 32<<20 {
		t.Fatalf("one verification allocated %d MiB", allocated>>20)
	}
}

// TestTooManySignatureEntries: a signature manifest with more layers than the limit is refused before
// any layer is read.
func TestTooManySignatureEntries(t *testing.T) {
	srv, ref := hostileRegistry(t, 1000, 10)
	p := imageverify.Policy{Name: "prod", Identity: "many", Registries: []string{srv.Listener.Addr().String()},
		Authorities: []imageverify.Authority{{Name: "release-key", PublicKey: newFixture(t).release.Public()}}}
	v := imageverify.New(imageverify.Options{})
	before := v.RegistryRequests()
	_, err := v.Verify(context.Background(), ref, []imageverify.Policy{p})
	denial(t, err, imageverify.CheckTooLarge, "exceeds the 32-entry limit")
	if n := v.RegistryRequests() - before; n > 4 {
		t.Fatalf("%d registry requests: the layers were read", n)
	}
}

// TestManyHugeVerificationsStayBounded: eight concurrent admissions of different images from the
// hostile registry stay within the bound (at most MaxConcurrent verifications read at once, each within
// its budget), and a legitimate image is verified meanwhile.
func TestManyHugeVerificationsStayBounded(t *testing.T) {
	srv, _ := hostileRegistry(t, 3, 100<<20)
	f := newFixture(t)
	good, err := f.reg.PushSigned("acme/files", f.release, slsa)
	must(t, err)
	hostile := imageverify.Policy{Name: "prod", Identity: "huge", Registries: []string{srv.Listener.Addr().String()},
		Authorities: []imageverify.Authority{{Name: "release-key", PublicKey: f.release.Public()}}}
	v := imageverify.New(imageverify.Options{})
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			ref := fmt.Sprintf("%s/acme/x@sha256:%064x", srv.Listener.Addr().String(), i+100)
			_, err := v.Verify(context.Background(), ref, []imageverify.Policy{hostile})
			denial(t, err, imageverify.CheckTooLarge, "limit")
		})
	}
	start := time.Now()
	if _, err := v.Verify(context.Background(), good.String(), []imageverify.Policy{f.policy()}); err != nil {
		t.Fatalf("a legitimate image during the attack: %v", err)
	}
	t.Logf("legitimate verification during the attack: %s", time.Since(start))
	wg.Wait()
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("eight hostile verifications allocated %.1f MiB", float64(allocated)/(1<<20))
	if allocated > 128<<20 {
		t.Fatalf("eight hostile verifications allocated %d MiB", allocated>>20)
	}
}
