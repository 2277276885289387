package display

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"os"
	"strings"
	"unicode"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/font/sfnt"
	"golang.org/x/image/math/fixed"
)

// fontSet holds the parsed fonts shared by every output. sfnt.Font is safe
// for concurrent use as long as each goroutine brings its own buffer, which
// the per-output typesetter does.
type fontSet struct {
	regular, bold *sfnt.Font // built-in Go fonts: Latin, Greek, Cyrillic
	cjk           *sfnt.Font // from font_file; nil without one
	cjkName       string
}

// loadFonts parses the built-in fonts and, when path is set, the OpenType
// font (TTF, OTF or TTC) that supplies CJK glyphs.
func loadFonts(path string) (*fontSet, error) {
	reg, err := opentype.Parse(goregular.TTF)
	if err != nil {
		return nil, fmt.Errorf("parse built-in font: %w", err)
	}
	bold, err := opentype.Parse(gobold.TTF)
	if err != nil {
		return nil, fmt.Errorf("parse built-in bold font: %w", err)
	}
	fs := &fontSet{regular: reg, bold: bold}
	if path == "" {
		return fs, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("font_file: %w", err)
	}
	fs.cjk, fs.cjkName, err = pickFace(b)
	if err != nil {
		return nil, fmt.Errorf("font_file %s: %w", path, err)
	}
	return fs, nil
}

// pickFace parses a font file or collection. In a collection it prefers a
// face that covers the on-screen Chinese texts and calls itself Simplified
// Chinese (Noto/Source Han "SC"), because collections such as
// NotoSansCJK.ttc put the Japanese face first and its glyph shapes differ.
func pickFace(b []byte) (*sfnt.Font, string, error) {
	var dirs []uint32 // offsets of each face's table directory
	if bytes.HasPrefix(b, []byte("ttcf")) {
		if len(b) < 12 {
			return nil, "", fmt.Errorf("truncated font collection")
		}
		n := binary.BigEndian.Uint32(b[8:])
		if n == 0 || n > 64 || len(b) < 12+4*int(n) {
			return nil, "", fmt.Errorf("font collection with %d faces", n)
		}
		for i := range n {
			dirs = append(dirs, binary.BigEndian.Uint32(b[12+4*i:]))
		}
	} else {
		dirs = []uint32{0}
	}
	var buf sfnt.Buffer
	var best *sfnt.Font
	bestName, bestScore := "", -1
	var firstErr error
	for i, off := range dirs {
		f, err := parseFace(b, off)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("face %d: %w", i, err)
			}
			continue
		}
		name, _ := f.Name(&buf, sfnt.NameIDFull)
		score := 0
		if coversAll(f, &buf, textsZH.all()) {
			score += 2
		}
		if strings.Contains(name, " SC") || strings.Contains(name, "Simplified") || strings.Contains(name, "Hei") {
			score++
		}
		if score > bestScore {
			best, bestName, bestScore = f, name, score
		}
	}
	if best == nil {
		return nil, "", firstErr
	}
	return best, bestName, nil
}

// parseFace parses the face whose table directory starts at off. The sfnt
// package insists that tables start on 4-byte boundaries, which real fonts
// break (wqy-microhei.ttc does), so the face is first copied into a
// standalone font with aligned tables.
func parseFace(b []byte, off uint32) (*sfnt.Font, error) {
	if off == 0 {
		if f, err := opentype.Parse(b); err == nil {
			return f, nil
		}
	}
	a, err := realign(b, off)
	if err != nil {
		return nil, err
	}
	return opentype.Parse(a)
}

// realign copies the face at off into a new single-face font whose tables
// are 4-byte aligned. Checksums are kept as they are: sfnt ignores them.
func realign(b []byte, off uint32) ([]byte, error) {
	if uint64(off)+12 > uint64(len(b)) {
		return nil, fmt.Errorf("table directory past end of file")
	}
	d := b[off:]
	n := int(binary.BigEndian.Uint16(d[4:]))
	if n == 0 || n > 256 || 12+16*n > len(d) {
		return nil, fmt.Errorf("bad table count %d", n)
	}
	head := 12 + 16*n
	out := make([]byte, head, len(b))
	copy(out, d[:head])
	for i := 0; i < n; i++ {
		rec := out[12+16*i:]
		o := binary.BigEndian.Uint32(rec[8:])
		l := binary.BigEndian.Uint32(rec[12:])
		if uint64(o)+uint64(l) > uint64(len(b)) {
			return nil, fmt.Errorf("table %q past end of file", rec[:4])
		}
		for len(out)%4 != 0 {
			out = append(out, 0)
		}
		binary.BigEndian.PutUint32(rec[8:], uint32(len(out)))
		out = append(out, b[o:o+l]...)
	}
	return out, nil
}

func coversAll(f *sfnt.Font, buf *sfnt.Buffer, s string) bool {
	for _, r := range s {
		if unicode.IsSpace(r) {
			continue
		}
		if i, err := f.GlyphIndex(buf, r); err != nil || i == 0 {
			return false
		}
	}
	return true
}

type weight int

const (
	regular weight = iota
	bold
)

type faceKey struct {
	f    *sfnt.Font
	size int
}

type glyphKey struct {
	face *face
	r    rune
}

// glyph is a rasterised glyph drawn with its origin (dot) at (0,0).
type glyph struct {
	mask    *image.Alpha
	rect    image.Rectangle // where mask lands relative to the dot
	advance fixed.Int26_6
}

type face struct {
	font.Face
	f *sfnt.Font
}

// typesetter measures and draws text for one goroutine (font.Face is not
// safe for concurrent use). It picks, rune by rune, the first font that has
// the glyph: the Go font of the requested weight, then the CJK font. It
// never draws .notdef boxes: callers ask covers() first and decide what to
// show instead. Glyphs are cached by rune because the same few texts are
// redrawn every second while a countdown runs.
type typesetter struct {
	fs     *fontSet
	buf    sfnt.Buffer
	faces  map[faceKey]*face
	glyphs map[glyphKey]*glyph
	has    map[hasKey]bool
}

type hasKey struct {
	f *sfnt.Font
	r rune
}

func newTypesetter(fs *fontSet) *typesetter {
	return &typesetter{fs: fs, faces: map[faceKey]*face{}, glyphs: map[glyphKey]*glyph{}, has: map[hasKey]bool{}}
}

func (t *typesetter) hasGlyph(f *sfnt.Font, r rune) bool {
	k := hasKey{f, r}
	if v, ok := t.has[k]; ok {
		return v
	}
	i, err := f.GlyphIndex(&t.buf, r)
	v := err == nil && i != 0
	t.has[k] = v
	return v
}

// fontFor returns the font that draws r, or nil when none has it. The
// configured font comes first, so that Latin, digits and CJK share one
// design (the Go fonts' slashed zero looks odd in a price); the Go fonts
// fill in what it lacks.
func (t *typesetter) fontFor(r rune, w weight) *sfnt.Font {
	if t.fs.cjk != nil && t.hasGlyph(t.fs.cjk, r) {
		return t.fs.cjk
	}
	latin := t.fs.regular
	if w == bold {
		latin = t.fs.bold
	}
	if t.hasGlyph(latin, r) {
		return latin
	}
	return nil
}

// embolden returns by how many pixels a glyph of f at size is smeared
// sideways to fake a bold weight: the configured font usually comes in one
// weight only (wqy-microhei, Droid Sans Fallback).
func (t *typesetter) embolden(f *sfnt.Font, w weight, size int) int {
	if w != bold || f != t.fs.cjk {
		return 0
	}
	return max(1, size/32)
}

// covers reports whether every visible rune of s can be drawn.
func (t *typesetter) covers(s string) bool {
	for _, r := range s {
		if unicode.IsSpace(r) {
			continue
		}
		if t.fontFor(r, regular) == nil {
			return false
		}
	}
	return true
}

func (t *typesetter) face(f *sfnt.Font, size int) *face {
	k := faceKey{f, size}
	if fc, ok := t.faces[k]; ok {
		return fc
	}
	ff, err := opentype.NewFace(f, &opentype.FaceOptions{Size: float64(size), DPI: 72, Hinting: font.HintingNone})
	if err != nil {
		// NewFace fails only on nil options; keep going without the face.
		return nil
	}
	fc := &face{Face: ff, f: f}
	t.faces[k] = fc
	return fc
}

func (t *typesetter) glyph(fc *face, r rune) *glyph {
	k := glyphKey{fc, r}
	if g, ok := t.glyphs[k]; ok {
		return g
	}
	dr, mask, mp, adv, ok := fc.Glyph(fixed.Point26_6{}, r)
	g := &glyph{advance: adv, rect: dr}
	if ok && !dr.Empty() {
		a := image.NewAlpha(image.Rect(0, 0, dr.Dx(), dr.Dy()))
		draw.Draw(a, a.Rect, mask, mp, draw.Src)
		g.mask = a
	}
	if len(t.glyphs) > 4096 {
		clear(t.glyphs)
	}
	t.glyphs[k] = g
	return g
}

// layoutRunes calls fn for each drawable rune with its pen position (in
// pixels from the start of the line). It returns the total advance.
func (t *typesetter) layoutRunes(s string, w weight, size int, fn func(g *glyph, x int)) int {
	var pen fixed.Int26_6
	var prev rune = -1
	var prevFace *face
	for _, r := range s {
		f := t.fontFor(r, w)
		if f == nil {
			prev, prevFace = -1, nil
			continue
		}
		fc := t.face(f, size)
		if fc == nil {
			continue
		}
		if prevFace == fc && prev >= 0 {
			pen += fc.Kern(prev, r)
		}
		g := t.glyph(fc, r)
		k := t.embolden(f, w, size)
		if fn != nil {
			for i := 0; i <= k; i++ {
				fn(g, pen.Round()+i)
			}
		}
		pen += g.advance + fixed.I(k)
		prev, prevFace = r, fc
	}
	return pen.Round()
}

// width returns the advance width of s in pixels.
func (t *typesetter) width(s string, w weight, size int) int {
	return t.layoutRunes(s, w, size, nil)
}

// draw draws s with its baseline at y and its left edge at x.
func (t *typesetter) draw(dst *image.RGBA, s string, w weight, size, x, y int, c color.RGBA) {
	src := image.NewUniform(c)
	t.layoutRunes(s, w, size, func(g *glyph, gx int) {
		if g.mask == nil {
			return
		}
		r := g.rect.Add(image.Pt(x+gx, y))
		draw.DrawMask(dst, r, src, image.Point{}, g.mask, image.Point{}, draw.Over)
	})
}

// fit shortens s with an ellipsis until it is at most maxW pixels wide.
func (t *typesetter) fit(s string, w weight, size, maxW int) string {
	if t.width(s, w, size) <= maxW {
		return s
	}
	ell := "…"
	if t.fontFor('…', w) == nil {
		ell = "..."
	}
	rs := []rune(s)
	// Binary search the longest prefix that fits with the ellipsis.
	lo, hi := 0, len(rs)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if t.width(strings.TrimRightFunc(string(rs[:mid]), unicode.IsSpace)+ell, w, size) <= maxW {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	if lo == 0 {
		if t.width(ell, w, size) <= maxW {
			return ell
		}
		return ""
	}
	return strings.TrimRightFunc(string(rs[:lo]), unicode.IsSpace) + ell
}

// cleanText makes outside text (subject, message) safe for one line:
// control and format characters go, runs of white space become one space.
func cleanText(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case unicode.IsSpace(r) || unicode.IsControl(r):
			space = b.Len() > 0
			continue
		case unicode.Is(unicode.Cf, r) || r == unicode.ReplacementChar:
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}
