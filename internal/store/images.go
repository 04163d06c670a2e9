package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Image is a root filesystem image, content-addressed by its digest. Tags are
// the names that point at it (each name points at exactly one image).
type Image struct {
	ID        string // digest: sha256:<64 hex>
	Path      string // the ext4 image file
	SizeBytes int64
	CreatedAt time.Time // set by PutImage when zero
	Tags      []string  // sorted; filled by Get/List
	// Kind and Source say where the image came from (a registry reference, an OCI
	// layout or archive path, a rootfs tar or directory, an ext4 file).
	Kind   string
	Source string
	// AgentVersion is the guest agent injected into the image; a newer bangerd
	// re-injects when it differs from its own.
	AgentVersion string
	// Meta holds the rest (manifest digest, platform, layer count) as JSON, opaque
	// to the store. Empty means {}.
	Meta json.RawMessage
}

var digestRe = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// IsDigest reports whether ref is an image digest rather than a tag.
func IsDigest(ref string) bool { return digestRe.MatchString(ref) }

// PutImage records img, or updates the path and size of the image with that
// digest, and points each of img.Tags at it (moving a tag off any other image),
// in one transaction. Tags already on the image and not in img.Tags are kept.
func (s *Store) PutImage(ctx context.Context, img Image) error {
	if !IsDigest(img.ID) {
		return fmt.Errorf("image %q: id must be a digest like sha256:<64 hex digits>", img.ID)
	}
	if img.Path == "" {
		return fmt.Errorf("image %s: empty path", img.ID)
	}
	if img.SizeBytes < 0 {
		return fmt.Errorf("image %s: negative size %d", img.ID, img.SizeBytes)
	}
	for _, t := range img.Tags {
		if err := validateTag(t); err != nil {
			return fmt.Errorf("image %s: %w", img.ID, err)
		}
	}
	if img.CreatedAt.IsZero() {
		img.CreatedAt = s.now()
	}
	meta, err := jsonOrEmpty(img.Meta)
	if err != nil {
		return fmt.Errorf("image %s: meta: %w", img.ID, err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `
			INSERT INTO images (id, path, size_bytes, created_at, kind, source, agent_version, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET path = excluded.path, size_bytes = excluded.size_bytes,
				kind = excluded.kind, source = excluded.source, agent_version = excluded.agent_version, meta = excluded.meta`,
			img.ID, img.Path, img.SizeBytes, stamp(img.CreatedAt), img.Kind, img.Source, img.AgentVersion, meta)
		if err != nil {
			return fmt.Errorf("image %s: %w", img.ID, err)
		}
		for _, t := range img.Tags {
			if err := tagTx(ctx, tx, t, img.ID); err != nil {
				return err
			}
		}
		return nil
	})
}

// TagImage points tag at the image ref names (a digest or another tag), moving
// the tag off any image it named before.
func (s *Store) TagImage(ctx context.Context, tag, ref string) error {
	if err := validateTag(tag); err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		id, err := resolveImageTx(ctx, tx, ref)
		if err != nil {
			return err
		}
		return tagTx(ctx, tx, tag, id)
	})
}

// UntagImage removes tag; the image itself stays. A missing tag is ErrNotFound.
func (s *Store) UntagImage(ctx context.Context, tag string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM image_tags WHERE name = ?`, tag)
		if err != nil {
			return fmt.Errorf("image tag %q: %w", tag, err)
		}
		return mustAffect(res, fmt.Sprintf("image tag %q", tag))
	})
}

// GetImage finds an image by digest or tag.
func (s *Store) GetImage(ctx context.Context, ref string) (Image, error) {
	var img Image
	err := s.read(ctx, func(tx *sql.Tx) error {
		id, err := resolveImageTx(ctx, tx, ref)
		if err != nil {
			return err
		}
		imgs, err := queryImages(ctx, tx, `WHERE id = ?`, id)
		if err != nil {
			return fmt.Errorf("image %q: %w", ref, err)
		}
		if len(imgs) == 0 { // resolved a moment ago in this snapshot: cannot happen
			return fmt.Errorf("image %q: %w", ref, ErrNotFound)
		}
		img = imgs[0]
		return nil
	})
	return img, err
}

// ListImages returns every image with its tags, oldest first.
func (s *Store) ListImages(ctx context.Context) ([]Image, error) {
	var imgs []Image
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		imgs, err = queryImages(ctx, tx, ``)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return imgs, nil
}

// DeleteImage removes the image with digest id and its tags. An image that VMs
// are made from is ErrInUse: their disks sit on top of its file. The file at
// Path is the caller's to remove, after this succeeds.
func (s *Store) DeleteImage(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if err := notUsedTx(ctx, tx, `image_id`, id, fmt.Sprintf("image %s", id)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM image_tags WHERE image_id = ?`, id); err != nil {
			return fmt.Errorf("image %s: delete tags: %w", id, err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM images WHERE id = ?`, id)
		if err != nil {
			return fmt.Errorf("image %s: delete: %w", id, err)
		}
		return mustAffect(res, fmt.Sprintf("image %s", id))
	})
}

func validateTag(tag string) error {
	switch {
	case tag == "":
		return errors.New("empty image tag")
	case IsDigest(tag):
		return fmt.Errorf("image tag %q looks like a digest: a tag must be a name", tag)
	case strings.ContainsAny(tag, " \t\n"):
		return fmt.Errorf("image tag %q contains whitespace", tag)
	}
	return nil
}

func tagTx(ctx context.Context, tx *sql.Tx, tag, id string) error {
	_, err := tx.ExecContext(ctx, `
		INSERT INTO image_tags (name, image_id) VALUES (?, ?)
		ON CONFLICT (name) DO UPDATE SET image_id = excluded.image_id`, tag, id)
	if err != nil {
		return fmt.Errorf("image tag %q -> %s: %w", tag, id, err)
	}
	return nil
}

// resolveImageTx turns a digest, a tag or a unique digest prefix (at least
// MinIDPrefix hex digits, with or without "sha256:") into a digest that exists. A
// tag wins over a prefix.
func resolveImageTx(ctx context.Context, tx *sql.Tx, ref string) (string, error) {
	q := `SELECT image_id FROM image_tags WHERE name = ?`
	if IsDigest(ref) {
		q = `SELECT id FROM images WHERE id = ?`
	}
	var id string
	err := tx.QueryRowContext(ctx, q, ref).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		pid, perr := byIDPrefix(ctx, tx, "images", "image", ref)
		if perr != nil {
			return "", perr
		}
		if pid != "" {
			return pid, nil
		}
		return "", &NotFoundError{Kind: "image", Ref: ref, Hint: "banger image ls lists them"}
	}
	if err != nil {
		return "", fmt.Errorf("image %q: %w", ref, err)
	}
	return id, nil
}

// queryImages selects images (filtered by where, which may be empty) with their
// tags. Two queries in the caller's read transaction: the images, then all tags.
func queryImages(ctx context.Context, tx *sql.Tx, where string, args ...any) ([]Image, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, path, size_bytes, created_at, kind, source, agent_version, meta FROM images `+where+` ORDER BY created_at, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	imgs := []Image{} // empty, not nil: it marshals as []
	byID := map[string]int{}
	for rows.Next() {
		var (
			img     Image
			created int64
			meta    string
		)
		if err := rows.Scan(&img.ID, &img.Path, &img.SizeBytes, &created, &img.Kind, &img.Source, &img.AgentVersion, &meta); err != nil {
			return nil, err
		}
		img.Meta = json.RawMessage(meta)
		img.CreatedAt = unstamp(created)
		byID[img.ID] = len(imgs)
		imgs = append(imgs, img)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(imgs) == 0 {
		return imgs, nil
	}

	trows, err := tx.QueryContext(ctx, `SELECT name, image_id FROM image_tags ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer trows.Close()
	for trows.Next() {
		var name, id string
		if err := trows.Scan(&name, &id); err != nil {
			return nil, err
		}
		if i, ok := byID[id]; ok {
			imgs[i].Tags = append(imgs[i].Tags, name)
		}
	}
	return imgs, trows.Err()
}

// notUsedTx returns ErrInUse, naming the VMs, if any VM's column equals id.
func notUsedTx(ctx context.Context, tx *sql.Tx, column, id, what string) error {
	rows, err := tx.QueryContext(ctx, `SELECT name FROM vms WHERE `+column+` = ? ORDER BY name`, id)
	if err != nil {
		return fmt.Errorf("%s: find VMs using it: %w", what, err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return fmt.Errorf("%s: find VMs using it: %w", what, err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%s: find VMs using it: %w", what, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("%s is used by VM(s) %s: remove them first (banger vm rm): %w", what, strings.Join(names, ", "), ErrInUse)
	}
	return nil
}
