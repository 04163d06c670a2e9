package privileged

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"banger/internal/blockdev"
)

// The rules of the loop and device-mapper ops. What is banger's:
//   - a file: strictly under the root's state/disks or state/images directory once
//     every symlink is resolved (each staying inside the root), regular, non-empty,
//     owned by the owner; under state/images (shared bases) only read-only;
//   - a loop device: /dev/loopN whose backing file, as the kernel reports it, is under
//     one of those two directories (in the configured or the resolved form);
//   - a device-mapper name: this root's prefix, a VM id, and optionally ".origin".
// Tables are parsed and must have exactly the disk layer's shapes (see
// DMCreateRequest), over banger's loops and this root's own origin devices.

var loopDevRe = regexp.MustCompile(`^/dev/loop(0|[1-9][0-9]{0,6})$`)

// sectorsRe is a plain decimal: no sign, no leading zero, at most 20 digits.
var sectorsRe = regexp.MustCompile(`^(0|[1-9][0-9]{0,19})$`)

// maxDMTable bounds a table's text; the disk layer's largest is about 100 bytes.
const maxDMTable = 1024

// Chunk sizes accepted in a snapshot table, in sectors: powers of two. The disk
// layer uses 8 (4 KiB, ext4's block).
const (
	minChunkSectors = 8
	maxChunkSectors = 1024
)

// loopTarget is a LoopAttach path that passed validation: Rel, relative to the
// symlink-free Root, names the file with no symlink on the way.
type loopTarget struct {
	Root   string
	Rel    string
	Images bool // under state/images: read-only only
}

// loopAttachSyntax checks what can be checked without the filesystem.
func (v validator) loopAttachSyntax(r *LoopAttachRequest) *Error {
	return checkPathSyntax(r.Path, filepath.Join(v.root, v.disksRel))
}

// loopAttach resolves and checks a LoopAttach path (see LoopAttachRequest). The
// attach itself re-checks on a descriptor opened beneath the root (openLoopFile).
func (v validator) loopAttach(r *LoopAttachRequest) (loopTarget, *Error) {
	p := r.Path
	if e := v.loopAttachSyntax(r); e != nil {
		return loopTarget{}, e
	}
	realRoot, e := v.realRoot()
	if e != nil {
		return loopTarget{}, e
	}
	rel, ok := beneath(v.root, p)
	if !ok {
		if rel, ok = beneath(realRoot, p); !ok {
			return loopTarget{}, invalidf("path %q is not under the banger root %s: the helper binds only files under %s or %s",
				p, v.root, filepath.Join(v.root, v.disksRel), filepath.Join(v.root, v.imagesRel))
		}
	}
	real, err := resolveBeneath(realRoot, v.root, rel)
	if err != nil {
		return loopTarget{}, invalidf("path %q: %v", p, err)
	}
	relReal, _ := beneath(realRoot, real)
	images, ok := v.classify(relReal)
	if !ok {
		return loopTarget{}, invalidf("path %q (%s) is not inside %s or %s: the helper binds only disk and image files to loop devices",
			p, real, filepath.Join(v.root, v.disksRel), filepath.Join(v.root, v.imagesRel))
	}
	if images && !r.ReadOnly {
		return loopTarget{}, invalidf("path %q is a shared base image: it can be bound to a loop device only read-only", p)
	}
	fi, err := os.Lstat(real)
	if err != nil {
		return loopTarget{}, invalidf("path %q: %v", p, unwrapPathErr(err))
	}
	f := factsOf(fi)
	if e := v.checkLoopFile(p, f, fi.Size()); e != nil {
		return loopTarget{}, e
	}
	return loopTarget{Root: realRoot, Rel: relReal, Images: images}, nil
}

// classify says whether rel (relative to the resolved root, symlink-free) is strictly
// inside the disks or the images directory, and which.
func (v validator) classify(rel string) (images, ok bool) {
	for _, d := range []struct {
		dir    string
		images bool
	}{{v.disksRel, false}, {v.imagesRel, true}} {
		if r, in := beneath(d.dir, rel); in && r != "." {
			return d.images, true
		}
	}
	return false, false
}

// checkLoopFile applies the file rules of LoopAttach: a non-empty regular file owned
// by the owner. A file of another user (a hard link to /etc/shadow, say) would let
// the owner read it through a device-mapper device it is given; a file of its own
// holds nothing the owner cannot already read and write.
func (v validator) checkLoopFile(p string, f fileFacts, size int64) *Error {
	switch {
	case !f.mode.IsRegular():
		return invalidf("path %q is a %s: the helper binds only regular files to loop devices", p, fileKind(f.mode))
	case f.uid != v.ownerUID:
		return invalidf("path %q belongs to uid %d: the helper binds only files owned by the owner (uid %d)", p, f.uid, v.ownerUID)
	case size <= 0:
		return invalidf("path %q is empty: a loop device over it would be an empty disk", p)
	}
	return nil
}

// realRoot resolves the configured root.
func (v validator) realRoot() (string, *Error) {
	realRoot, err := filepath.EvalSymlinks(v.root)
	if err != nil {
		return "", &Error{Code: CodeFailed, Message: fmt.Sprintf("resolve banger root %s: %v", v.root, err)}
	}
	return realRoot, nil
}

// bangerBacking says whether a loop's backing file, as the kernel reports it (the
// path it was opened by, symlinks resolved), is under the disks or images directory,
// in the configured form or the resolved one, and which.
func (v validator) bangerBacking(path, realRoot string) (images, ok bool) {
	if !filepath.IsAbs(path) {
		return false, false
	}
	for _, root := range []string{v.root, realRoot} {
		if rel, in := beneath(root, filepath.Clean(path)); in {
			if images, ok := v.classify(rel); ok {
				return images, true
			}
		}
	}
	return false, false
}

// bangerLoops keeps banger's loops.
func (v validator) bangerLoops(loops []blockdev.Loop, realRoot string) []blockdev.Loop {
	out := []blockdev.Loop{}
	for _, l := range loops {
		if _, ok := v.bangerBacking(l.BackingFile, realRoot); ok {
			out = append(out, l)
		}
	}
	return out
}

func checkLoopDevice(field, dev string) *Error {
	if !loopDevRe.MatchString(dev) {
		return invalidf("%s %q is not a loop device: send /dev/loopN as LoopAttach returned it", field, dev)
	}
	return nil
}

func (v validator) loopDetachSyntax(r *LoopDetachRequest) *Error {
	return checkLoopDevice("device", r.Device)
}

// loopDetach checks a LoopDetach device against the bound loops. bound is false for
// a device that is not bound: there is nothing to detach, and the helper must not
// touch it (someone may bind it at any moment).
func (v validator) loopDetach(r *LoopDetachRequest, loops []blockdev.Loop, realRoot string) (bound bool, e *Error) {
	if e := v.loopDetachSyntax(r); e != nil {
		return false, e
	}
	l, found := findLoop(loops, r.Device)
	if !found {
		return false, nil
	}
	if _, ok := v.bangerBacking(l.BackingFile, realRoot); !ok {
		return false, invalidf("loop device %s is backed by %s, which is not banger's: the helper detaches only loops over files under %s or %s",
			r.Device, l.BackingFile, filepath.Join(v.root, v.disksRel), filepath.Join(v.root, v.imagesRel))
	}
	return true, nil
}

func findLoop(loops []blockdev.Loop, dev string) (blockdev.Loop, bool) {
	for _, l := range loops {
		if l.Device == dev {
			return l, true
		}
	}
	return blockdev.Loop{}, false
}

// dmName is a device-mapper name that passed validation.
type dmName struct {
	name   string
	vmID   string
	origin bool // NAME.origin, not the VM's snapshot
}

// checkDMName accepts only this root's names: dmPrefix + VM id [+ ".origin"].
func (v validator) checkDMName(field, name string) (dmName, *Error) {
	if err := blockdev.ValidateDMName(name); err != nil {
		return dmName{}, invalidf("%s: %v", field, err)
	}
	rest, ok := strings.CutPrefix(name, v.dmPrefix)
	if !ok {
		return dmName{}, invalidf("%s %q is not this banger root's: its device-mapper names start with %q (a hash of %s); the helper touches no other device",
			field, name, v.dmPrefix, filepath.Join(v.root, v.disksRel))
	}
	id, origin := strings.CutSuffix(rest, DMOriginSuffix)
	if !vmIDRe.MatchString(id) {
		return dmName{}, invalidf("%s %q: after the prefix %q comes a VM id (letters, digits, - and _, at most 64), optionally followed by %q",
			field, name, v.dmPrefix, DMOriginSuffix)
	}
	return dmName{name: name, vmID: id, origin: origin}, nil
}

// dmTarget is one parsed table line.
type dmTarget struct {
	start, length int64
	kind          string
	args          []string
}

// parseSectors reads a sector count or offset: plain decimal, at most MaxDMSectors.
func parseSectors(what, s string) (int64, *Error) {
	if !sectorsRe.MatchString(s) {
		return 0, invalidf("table: %s %q is not a plain decimal sector count", what, s)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > MaxDMSectors {
		return 0, invalidf("table: %s %s is beyond %d sectors (64 TiB)", what, s, MaxDMSectors)
	}
	return n, nil
}

// parseDMTable reads a table: lines "START LENGTH TARGET ARGS..." separated by single
// newlines (one trailing newline allowed), fields by single spaces, from a small
// character set. Lengths are positive, lines contiguous from sector 0, and the total
// at most MaxDMSectors. Target types other than linear, zero and snapshot are
// refused here; their arguments are checked by dmShape.
func parseDMTable(table string) ([]dmTarget, *Error) {
	if table == "" {
		return nil, invalidf("table is empty")
	}
	if len(table) > maxDMTable {
		return nil, invalidf("table is %d bytes: the helper accepts at most %d", len(table), maxDMTable)
	}
	for _, c := range table {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(" /._+-\n", c)) {
			return nil, invalidf("table contains %q: only letters, digits, single spaces, newlines and /._+- are accepted", c)
		}
	}
	var out []dmTarget
	var next int64
	for i, line := range strings.Split(strings.TrimSuffix(table, "\n"), "\n") {
		f := strings.Split(line, " ")
		for _, x := range f {
			if x == "" {
				return nil, invalidf("table line %d %q: empty line, or fields not separated by single spaces", i+1, line)
			}
		}
		if len(f) < 3 {
			return nil, invalidf("table line %d %q: want START LENGTH TARGET [ARGS]", i+1, line)
		}
		start, e := parseSectors("start", f[0])
		if e != nil {
			return nil, e
		}
		length, e := parseSectors("length", f[1])
		if e != nil {
			return nil, e
		}
		switch {
		case length == 0:
			return nil, invalidf("table line %d: length 0: every target covers at least one sector", i+1)
		case start != next:
			return nil, invalidf("table line %d starts at sector %d, want %d: targets must follow each other from sector 0", i+1, start, next)
		case next+length > MaxDMSectors:
			return nil, invalidf("table is longer than %d sectors (64 TiB)", MaxDMSectors)
		}
		next += length
		switch f[2] {
		case "linear", "zero", "snapshot":
		default:
			return nil, invalidf("table line %d: target type %q is refused: the helper makes only banger's linear, zero and snapshot targets", i+1, f[2])
		}
		out = append(out, dmTarget{start: start, length: length, kind: f[2], args: f[3:]})
	}
	return out, nil
}

// formatDMTable is the canonical text of a parsed table: what reaches dmsetup.
func formatDMTable(ts []dmTarget) string {
	var b strings.Builder
	for _, t := range ts {
		fmt.Fprintf(&b, "%d %d %s", t.start, t.length, t.kind)
		for _, a := range t.args {
			b.WriteString(" " + a)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// dmTable is a DMCreate request that passed the checks that need no kernel state.
type dmTable struct {
	name    dmName
	targets []dmTarget
	// roLoops must be banger's read-only loops (the base); rwLoop, when set, a
	// writable one under the disks directory (the COW).
	roLoops []string
	rwLoop  string
	// originDev, when set, is /dev/mapper/NAME.origin, which must exist.
	originDev string
}

// dmCreateSyntax checks a DMCreate request's name and the table's shape for that name.
func (v validator) dmCreateSyntax(r *DMCreateRequest) (dmTable, *Error) {
	n, e := v.checkDMName("name", r.Name)
	if e != nil {
		return dmTable{}, e
	}
	ts, e := parseDMTable(r.Table)
	if e != nil {
		return dmTable{}, e
	}
	t := dmTable{name: n, targets: ts}
	if n.origin {
		return t, t.originShape()
	}
	return t, t.snapshotShape()
}

// originShape: "0 B linear LOOP OFFSET" then "B Z zero".
func (t *dmTable) originShape() *Error {
	ts := t.targets
	if len(ts) != 2 || ts[0].kind != "linear" || ts[1].kind != "zero" {
		return invalidf("table for origin %s: want exactly two lines, linear over the base's loop device then zero", t.name.name)
	}
	if len(ts[0].args) != 2 || len(ts[1].args) != 0 {
		return invalidf("table for origin %s: linear takes a device and an offset, zero takes nothing", t.name.name)
	}
	if e := checkLoopDevice("table: linear device", ts[0].args[0]); e != nil {
		return e
	}
	off, e := parseSectors("linear offset", ts[0].args[1])
	if e != nil {
		return e
	}
	if off+ts[0].length > MaxDMSectors {
		return invalidf("table: linear offset %d plus length %d is beyond %d sectors", off, ts[0].length, MaxDMSectors)
	}
	t.roLoops = []string{ts[0].args[0]}
	return nil
}

// snapshotShape: "0 S snapshot ORIGIN COW P CHUNK".
func (t *dmTable) snapshotShape() *Error {
	ts := t.targets
	if len(ts) != 1 || ts[0].kind != "snapshot" {
		return invalidf("table for %s: want exactly one line, a snapshot target", t.name.name)
	}
	a := ts[0].args
	if len(a) != 4 {
		return invalidf("table for %s: snapshot takes ORIGIN COW P CHUNK, got %d arguments", t.name.name, len(a))
	}
	origin, cow, persist, chunk := a[0], a[1], a[2], a[3]
	switch ownOrigin := blockdev.MapperDir + "/" + t.name.name + DMOriginSuffix; {
	case origin == ownOrigin:
		t.originDev = origin
	case loopDevRe.MatchString(origin):
		t.roLoops = []string{origin}
	default:
		return invalidf("table: snapshot origin %q is neither a loop device nor this disk's own origin %s", origin, ownOrigin)
	}
	if e := checkLoopDevice("table: snapshot COW device", cow); e != nil {
		return e
	}
	if cow == origin {
		return invalidf("table: snapshot COW device %s is also its origin", cow)
	}
	t.rwLoop = cow
	if persist != "P" {
		return invalidf("table: snapshot store %q is refused: banger's snapshots are persistent (P)", persist)
	}
	n, err := strconv.Atoi(chunk)
	if err != nil || strconv.Itoa(n) != chunk || n < minChunkSectors || n > maxChunkSectors || n&(n-1) != 0 {
		return invalidf("table: snapshot chunk size %q: want a power of two from %d to %d sectors", chunk, minChunkSectors, maxChunkSectors)
	}
	return nil
}

// dmCreateDevices checks the devices a table names against the kernel's state: the
// bound loops and the existing device-mapper names.
func (v validator) dmCreateDevices(t dmTable, loops []blockdev.Loop, names []string, realRoot string) *Error {
	check := func(dev string, writable bool) *Error {
		l, ok := findLoop(loops, dev)
		if !ok {
			return invalidf("table: %s is not bound to a file: attach it with LoopAttach first", dev)
		}
		images, ok := v.bangerBacking(l.BackingFile, realRoot)
		switch {
		case !ok:
			return invalidf("table: %s is backed by %s, which is not banger's: tables may use only loops over files under %s or %s",
				dev, l.BackingFile, filepath.Join(v.root, v.disksRel), filepath.Join(v.root, v.imagesRel))
		case l.Deleted:
			return invalidf("table: %s is backed by %s, which has been deleted", dev, l.BackingFile)
		case len(l.Holders) > 0:
			return invalidf("table: %s is already used by %s", dev, strings.Join(l.Holders, ", "))
		case writable && (images || l.ReadOnly):
			return invalidf("table: the snapshot's COW device %s must be a writable loop over a file under %s", dev, filepath.Join(v.root, v.disksRel))
		case !writable && !l.ReadOnly:
			return invalidf("table: base device %s must be a read-only loop: banger never writes a base image", dev)
		}
		return nil
	}
	for _, dev := range t.roLoops {
		if e := check(dev, false); e != nil {
			return e
		}
	}
	if t.rwLoop != "" {
		if e := check(t.rwLoop, true); e != nil {
			return e
		}
	}
	if t.originDev != "" && !contains(names, strings.TrimPrefix(t.originDev, blockdev.MapperDir+"/")) {
		return invalidf("table: origin %s does not exist: create it before its snapshot", t.originDev)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
