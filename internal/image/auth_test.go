package image_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"banger/internal/image"
	"banger/internal/image/imagetest"
	"banger/internal/image/oci"
)

// TestPullWithDockerCredentials pulls from a registry that wants a
// password, with the credentials in a docker config.json found the way
// `docker login` leaves them (DOCKER_CONFIG here, ~/.docker by default).
func TestPullWithDockerCredentials(t *testing.T) {
	tools := imagetest.Tools(t)
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="banger-test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"log in"}]}`, http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := host + "/private:v1"
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img := makeImage(t, hostArch(), layer(t, imagetest.Entry{Name: "secret", Body: "42"}))
	if err := remote.Write(tag, img, remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"})); err != nil {
		t.Fatal(err)
	}

	writeDockerConfig := func(password string) {
		t.Helper()
		dir := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte("alice:" + password))
		cfg := `{"auths":{"` + host + `":{"auth":"` + auth + `"}}}`
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("DOCKER_CONFIG", dir)
	}
	b, err := image.New(image.Config{Tools: tools, Registry: oci.Options{Retries: -1}}) // the default keychain
	if err != nil {
		t.Fatal(err)
	}
	out := outDir(t, "private.ext4")

	writeDockerConfig("wrong")
	_, err = b.Pull(context.Background(), ref, filepath.Join(out, "private.ext4"), image.Options{})
	if !errors.Is(err, image.ErrUnauthorized) || !strings.Contains(err.Error(), "docker login") {
		t.Errorf("Pull with a wrong password: got %v, want ErrUnauthorized with a hint", err)
	}

	writeDockerConfig("s3cret")
	dst := filepath.Join(out, "private.ext4")
	if _, err := b.Pull(context.Background(), ref, dst, image.Options{}); err != nil {
		t.Fatalf("Pull with credentials: %v", err)
	}
	if got := readFile(t, tools, dst, "/secret"); got != "42" {
		t.Errorf("/secret: got %q", got)
	}
}

// TestPullCancelled cancels a pull while its first layer streams in:
// the error says so and nothing is left.
func TestPullCancelled(t *testing.T) {
	b, _ := newBuilder(t)
	reg := newRegistry(t)
	ref := reg.push(t, "cancel:v1", richImage(t))
	out := outDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := b.Pull(ctx, ref, filepath.Join(out, "x.ext4"), image.Options{Progress: func(e image.Event) {
		if e.Phase == "download" {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Pull: got %v, want context.Canceled", err)
	}
}
