package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"banger/internal/image/progress"
)

// Image paths.
const (
	PathImages      = Prefix + "/images"        // GET: list
	PathImagePull   = Prefix + "/images/pull"   // POST: ImagePullRequest, streams ImageStreamLine
	PathImageImport = Prefix + "/images/import" // POST: ImageImportRequest, streams ImageStreamLine
	PathImageUpload = Prefix + "/images/upload" // POST: a local input's bytes, ImageUpload in the query; streams ImageStreamLine
	// PathImage + "/{ref}" — GET inspect, DELETE remove (?force=1). ref is
	// path-escaped: tags hold '/' and ':'.
	PathImage = Prefix + "/images/"
)

// Image is one image as the API shows it.
type Image struct {
	ID           string          `json:"id"`
	Tags         []string        `json:"tags"`
	Path         string          `json:"path"`
	SizeBytes    int64           `json:"size_bytes"`
	Kind         string          `json:"kind"`
	Source       string          `json:"source"`
	AgentVersion string          `json:"agent_version"`
	CreatedAt    time.Time       `json:"created_at"`
	Meta         json.RawMessage `json:"meta,omitempty"`
	// UsedBy names the VMs whose disks are made from this image.
	UsedBy []string `json:"used_by"`
}

// ImagePullRequest asks for an image from a registry, an OCI layout directory or
// a docker-save archive (absolute paths).
type ImagePullRequest struct {
	Ref  string `json:"ref"`
	Name string `json:"name,omitempty"` // an extra tag
}

// ImageImportRequest asks for a rootfs tarball, a directory or an ext4 file at an
// absolute path bangerd can read.
type ImageImportRequest struct {
	Path string `json:"path"`
	Name string `json:"name,omitempty"`
}

// ImageUpload describes a local input that the CLI read as its caller and sends as
// the request body. Local files are read by whoever runs the CLI, not by bangerd:
// what the caller can read imports (a root-owned 0600 archive, when root runs the
// CLI), and bangerd, which runs as the owner, never opens the caller's files.
type ImageUpload struct {
	// Op is "import" (a rootfs tarball or ext4 file, or a directory sent as a tar)
	// or "pull" (a docker archive, or an OCI layout directory sent as a tar).
	Op string
	// Kind is "file" (the file's bytes), "dir" (a directory as a deterministic
	// tar) or "layout" (an OCI image layout directory as a tar).
	Kind string
	// Source is the caller's path, for the image's record and for messages.
	Source string
	// Name tags the image (import: default from Source; pull: an extra tag).
	Name string
	// Tag picks one image of a layout or archive holding several.
	Tag string
}

// Upload ops and kinds.
const (
	UploadImport = "import"
	UploadPull   = "pull"
	UploadFile   = "file"
	UploadDir    = "dir"
	UploadLayout = "layout"
)

// Query encodes u for the request URL.
func (u ImageUpload) Query() url.Values {
	return url.Values{"op": {u.Op}, "kind": {u.Kind}, "source": {u.Source}, "name": {u.Name}, "tag": {u.Tag}}
}

// ParseImageUpload reads and checks an upload's query.
func ParseImageUpload(q url.Values) (ImageUpload, error) {
	u := ImageUpload{Op: q.Get("op"), Kind: q.Get("kind"), Source: q.Get("source"), Name: q.Get("name"), Tag: q.Get("tag")}
	switch {
	case u.Op == UploadImport && (u.Kind == UploadFile || u.Kind == UploadDir):
	case u.Op == UploadPull && (u.Kind == UploadFile || u.Kind == UploadLayout):
	default:
		return ImageUpload{}, fmt.Errorf("image upload: op %q with kind %q is not one of import file|dir or pull file|layout", u.Op, u.Kind)
	}
	if u.Source == "" {
		return ImageUpload{}, fmt.Errorf("image upload: source (the caller's path) is missing")
	}
	return u, nil
}

// UploadImage sends a local input (see ImageUpload), calling onEvent for each
// progress event of the conversion that follows.
func (c *Client) UploadImage(ctx context.Context, u ImageUpload, body io.Reader, onEvent progress.Func) (ImageResult, error) {
	return streamBody[ImageResult](ctx, c, PathImageUpload+"?"+u.Query().Encode(), "application/octet-stream", body, onEvent)
}

// ImageResult ends a pull or import.
type ImageResult struct {
	Image Image `json:"image"`
	// Reused is true when the image was already there: nothing was downloaded or
	// converted.
	Reused bool `json:"reused"`
}

// ImageRemoveResult says what rm did.
type ImageRemoveResult struct {
	ID       string   `json:"id"`
	Removed  bool     `json:"removed"`            // record and file deleted
	Untagged []string `json:"untagged"`           // tags removed
	KeptFor  []string `json:"kept_for,omitempty"` // --force on an image in use: kept until these VMs go
}

// StreamLine is one line of a streamed answer (application/x-ndjson): progress
// events, then exactly one of Result or Error.
type StreamLine[T any] struct {
	Event  *progress.Event `json:"event,omitempty"`
	Result *T              `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// PullImage pulls an image, calling onEvent for each progress event.
func (c *Client) PullImage(ctx context.Context, req ImagePullRequest, onEvent progress.Func) (ImageResult, error) {
	return stream[ImageResult](ctx, c, PathImagePull, req, onEvent)
}

// ImportImage imports an image, calling onEvent for each progress event.
func (c *Client) ImportImage(ctx context.Context, req ImageImportRequest, onEvent progress.Func) (ImageResult, error) {
	return stream[ImageResult](ctx, c, PathImageImport, req, onEvent)
}

// Images lists the images.
func (c *Client) Images(ctx context.Context) ([]Image, error) {
	var out []Image
	return out, c.do(ctx, http.MethodGet, PathImages, nil, &out)
}

// Image inspects one image by digest, tag or unique digest prefix.
func (c *Client) Image(ctx context.Context, ref string) (Image, error) {
	var out Image
	return out, c.do(ctx, http.MethodGet, PathImage+url.PathEscape(ref), nil, &out)
}

// RemoveImage removes an image (force: untag one that VMs still use).
func (c *Client) RemoveImage(ctx context.Context, ref string, force bool) (ImageRemoveResult, error) {
	var out ImageRemoveResult
	p := PathImage + url.PathEscape(ref)
	if force {
		p += "?force=1"
	}
	return out, c.do(ctx, http.MethodDelete, p, nil, &out)
}

// stream posts in and reads an NDJSON answer of StreamLine[T].
func stream[T any](ctx context.Context, c *Client, path string, in any, onEvent progress.Func) (T, error) {
	b, err := json.Marshal(in)
	if err != nil {
		var zero T
		return zero, err
	}
	return streamBody[T](ctx, c, path, "application/json", bytes.NewReader(b), onEvent)
}

// streamBody posts body to path and reads the NDJSON answer: progress events, then
// a result or an error.
func streamBody[T any](ctx context.Context, c *Client, path, contentType string, body io.Reader, onEvent progress.Func) (T, error) {
	var zero T
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://bangerd"+path, body)
	if err != nil {
		return zero, err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.hc.Do(req)
	if err != nil {
		return zero, c.transportError(http.MethodPost, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return zero, decodeError(resp, http.MethodPost, path)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var line StreamLine[T]
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return zero, fmt.Errorf("bangerd POST %s: bad stream line: %w", path, err)
		}
		switch {
		case line.Error != nil:
			return zero, line.Error
		case line.Result != nil:
			return *line.Result, nil
		case line.Event != nil && onEvent != nil:
			onEvent(*line.Event)
		}
	}
	if err := sc.Err(); err != nil {
		return zero, fmt.Errorf("bangerd POST %s: %w", path, err)
	}
	return zero, fmt.Errorf("bangerd POST %s: the answer ended without a result (did bangerd stop?)", path)
}
