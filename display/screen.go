package display

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"strings"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/payment"
)

// Kind is which screen to show.
type Kind int

// The screens a customer sees.
const (
	Idle    Kind = iota // nothing to pay: welcome
	Pay                 // QR code(s), amount, subject, countdown
	Paid                // payment received
	Expired             // the QR code ran out
	Error               // payment cannot be taken now
)

var kindNames = [...]string{"idle", "pay", "paid", "expired", "error"}

// String returns the kind's name as used in /state ("idle", "pay", …).
func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("kind(%d)", int(k))
	}
	return kindNames[k]
}

// Code is one QR code to show: the provider and the exact content
// (WeChat code_url, Alipay qr_code) it must decode to.
type Code struct {
	Provider payment.ProviderName
	Content  string
}

// Screen is what the customer should see now.
type Screen struct {
	Kind Kind
	// Codes are the QR codes of a Pay screen: one, or two side by side
	// when the order offers both providers.
	Codes []Code
	// Amount is shown on Pay and Paid screens.
	Amount payment.Fen
	// Subject describes what is being paid for.
	Subject string
	// ExpiresAt drives the countdown of a Pay screen.
	ExpiresAt time.Time
	// OutTradeNo is shown small, for support calls.
	OutTradeNo string
	// Message explains an Error screen.
	Message string
}

// frame is a Screen as the outputs see it: numbered so that an output can
// tell a new screen from a countdown tick, and with the time the pay
// screen first appeared, which scales the countdown bar.
type frame struct {
	Screen
	seq   uint64
	start time.Time
}

// remaining is the countdown shown at now, in whole seconds rounded up, so
// that "0:00" appears only when the code has expired.
func remaining(expires, now time.Time) time.Duration {
	d := expires.Sub(now)
	if d <= 0 {
		return 0
	}
	return (d + time.Second - 1).Truncate(time.Second)
}

// formatCountdown renders a countdown as m:ss, or h:mm:ss from an hour up.
func formatCountdown(d time.Duration) string {
	s := int64(d / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// nextTick returns how long after now the shown countdown changes, or false
// when f shows no running countdown.
func nextTick(f *frame, now time.Time) (time.Duration, bool) {
	if f.Kind != Pay || f.ExpiresAt.IsZero() {
		return 0, false
	}
	d := f.ExpiresAt.Sub(now)
	if d <= 0 {
		return 0, false
	}
	// The display changes when d crosses the next whole second below it.
	step := d % time.Second
	if step == 0 {
		step = time.Second
	}
	return step, true
}

func providerColour(p payment.ProviderName) color.RGBA {
	switch p {
	case payment.WxPay:
		return colWxPay
	case payment.Alipay:
		return colAlipay
	}
	return colText
}

// composer draws screens into RGBA images for one output (it owns a
// typesetter, which is not safe for concurrent use).
type composer struct {
	ts *typesetter
	tx *texts
	p  painter

	qr map[string][][]bool // QR modules by content, for the screen on show

	// What the last full render drew, so that a countdown tick redraws
	// only the countdown.
	lastSeq  uint64
	lastDst  *image.RGBA
	lastRect image.Rectangle
	cd       *countdownArea
	cdText   string
	cdBar    int
}

func newComposer(fs *fontSet, locale config.Locale) *composer {
	ts := newTypesetter(fs)
	return &composer{ts: ts, tx: textsFor(locale, ts), qr: map[string][][]bool{}}
}

// countdownArea is where a pay screen's countdown lives.
type countdownArea struct {
	rect     image.Rectangle // cleared and redrawn on every tick
	align    int             // -1 left, 0 centre, 1 right of x
	x        int
	baseline int
	size     int
	bar      image.Rectangle // empty: no bar
	accent   color.RGBA
	start    time.Time
	expires  time.Time
}

// render draws f into dst as it should look at now. A new frame (or a new
// dst) is drawn whole; the same frame again redraws only its countdown. It
// returns the part of dst that changed (empty when nothing did). An error
// means the screen could not be drawn as asked (e.g. a QR code too long to
// encode) and an error screen was drawn instead.
func (c *composer) render(dst *image.RGBA, f *frame, now time.Time) (image.Rectangle, error) {
	if c.lastDst == dst && c.lastRect == dst.Rect && c.lastSeq == f.seq && f.seq != 0 {
		if c.cd == nil {
			return image.Rectangle{}, nil
		}
		return c.drawCountdown(dst, now, false), nil
	}
	c.lastDst, c.lastRect, c.lastSeq, c.cd = dst, dst.Rect, f.seq, nil
	fillRect(dst, dst.Rect, colBackground)
	var err error
	switch f.Kind {
	case Pay:
		if err = c.drawPay(dst, f, now); err != nil {
			fillRect(dst, dst.Rect, colBackground)
			c.cd = nil
			c.drawStatus(dst, Error, &Screen{Kind: Error, Message: "QR code cannot be shown"})
		}
	case Idle:
		c.drawIdle(dst)
	default:
		c.drawStatus(dst, f.Kind, &f.Screen)
	}
	return dst.Rect, err
}

// metrics are the sizes of one screen, derived from its shorter side so
// that a 480×800 panel and a 1080×1920 one look alike.
type metrics struct {
	u                                   float64
	margin                              int
	title, amount, subject, label, tiny int
	cdLabel, cd                         int
	frame, radius, gap                  int
}

func metricsFor(r image.Rectangle) metrics {
	u := float64(min(r.Dx(), r.Dy())) / 100
	px := func(v float64) int { return max(1, int(math.Round(v*u))) }
	return metrics{
		u:       u,
		margin:  px(5),
		title:   px(5.2),
		amount:  px(13),
		subject: px(4.4),
		label:   px(4.6),
		tiny:    max(10, px(2.6)),
		cdLabel: px(3.4),
		cd:      px(7.5),
		frame:   max(3, px(1.3)),
		radius:  px(2.6),
		gap:     px(5),
	}
}

// line heights relative to font size
func lh(size int, k float64) int { return int(math.Round(float64(size) * k)) }

// codeBlock is the placement of the QR cards.
type codeBlock struct {
	scale  int
	n      int               // modules per side of the largest code, without quiet zone
	cards  []image.Rectangle // outer card (accent frame included)
	labelY int               // baseline of the provider labels
}

// placeCodes fits k cards side by side into area with an integer module
// scale, a quiet zone of QuietZone modules and a label below each.
func placeCodes(area image.Rectangle, k, n int, m metrics) codeBlock {
	labelH := lh(m.label, 1.25)
	labelGap := lh(m.label, 0.9)
	gap := m.gap
	if k > 1 {
		gap = m.gap * 3 / 5 // two codes share the width: every pixel counts
	}
	m.gap = gap
	availW := (area.Dx()-(k-1)*m.gap)/k - 2*m.frame
	availH := area.Dy() - labelH - labelGap - 2*m.frame
	side := min(availW, availH)
	mods := n + 2*payment.QuietZone
	scale := side / mods
	if scale < 1 {
		return codeBlock{}
	}
	card := scale*mods + 2*m.frame
	totalW := k*card + (k-1)*m.gap
	totalH := card + labelGap + labelH
	x0 := area.Min.X + (area.Dx()-totalW)/2
	y0 := area.Min.Y + (area.Dy()-totalH)/2
	b := codeBlock{scale: scale, n: n, labelY: y0 + card + labelGap + lh(m.label, 0.95)}
	for i := 0; i < k; i++ {
		x := x0 + i*(card+m.gap)
		b.cards = append(b.cards, image.Rect(x, y0, x+card, y0+card))
	}
	return b
}

func (c *composer) modules(content string) ([][]bool, error) {
	if q, ok := c.qr[content]; ok {
		return q, nil
	}
	q, err := payment.QRModules(content)
	if err != nil {
		return nil, err
	}
	if len(c.qr) >= 4 {
		clear(c.qr)
	}
	c.qr[content] = q
	return q, nil
}

// drawQR draws mods centred in the white square sq at scale px per module.
func drawQR(dst *image.RGBA, sq image.Rectangle, mods [][]bool, scale int) {
	fillRect(dst, sq, colQRLight)
	n := len(mods)
	off := (sq.Dx() - n*scale) / 2
	x0, y0 := sq.Min.X+off, sq.Min.Y+off
	if !image.Rect(x0, y0, x0+n*scale, y0+n*scale).In(dst.Rect) {
		return
	}
	w := n * scale * 4
	row := make([]byte, w)
	for y, r := range mods {
		for x, dark := range r {
			c := colQRLight
			if dark {
				c = colQRDark
			}
			for i := x * scale * 4; i < (x+1)*scale*4; i += 4 {
				row[i], row[i+1], row[i+2], row[i+3] = c.R, c.G, c.B, c.A
			}
		}
		for dy := 0; dy < scale; dy++ {
			off := dst.PixOffset(x0, y0+y*scale+dy)
			copy(dst.Pix[off:off+w], row)
		}
	}
}

// text helpers: a is -1 left, 0 centre, 1 right aligned on x.
func (c *composer) text(dst *image.RGBA, s string, w weight, size, x, baseline, a int, col color.RGBA) {
	if s == "" {
		return
	}
	switch a {
	case 0:
		x -= c.ts.width(s, w, size) / 2
	case 1:
		x -= c.ts.width(s, w, size)
	}
	c.ts.draw(dst, s, w, size, x, baseline, col)
}

// outside returns cleaned outside text when every character can be drawn,
// else "". A partly drawn subject could change its meaning ("按摩15分钟"
// without CJK glyphs would read "15"), so it is left out whole.
func (c *composer) outside(s string) string {
	s = cleanText(s)
	if !c.ts.covers(s) {
		return ""
	}
	return s
}

// amountSize shrinks size until the amount fits maxW: money is never
// shortened with an ellipsis.
func (c *composer) amountSize(s string, size, maxW int) int {
	for size > 8 && c.ts.width(s, bold, size) > maxW {
		size = size * 9 / 10
	}
	return size
}

type arrangement int

const (
	stacked arrangement = iota // portrait: texts above, codes, countdown below
	side                       // landscape: texts left, codes right
	banner                     // landscape with two codes: one line of texts on top
)

func (c *composer) drawPay(dst *image.RGBA, f *frame, now time.Time) error {
	if len(f.Codes) == 0 {
		return fmt.Errorf("pay screen without QR code")
	}
	codes := f.Codes
	if len(codes) > 2 {
		codes = codes[:2]
	}
	var mods [][][]bool
	n := 0
	for _, cd := range codes {
		q, err := c.modules(cd.Content)
		if err != nil {
			return fmt.Errorf("%s QR code: %w", cd.Provider, err)
		}
		mods = append(mods, q)
		n = max(n, len(q))
	}
	r := dst.Rect
	m := metricsFor(r)
	W, H := r.Dx(), r.Dy()
	portrait := H >= W

	// Reserve room for texts in each arrangement and keep the one that
	// gives the QR codes the largest module scale.
	subject := c.outside(f.Subject)
	headH := m.margin + lh(m.title, 1.5) + lh(m.amount, 1.2)
	if subject != "" {
		headH += lh(m.subject, 1.5)
	}
	footH := lh(m.cdLabel, 1.5) + lh(m.cd, 1.15) + max(4, int(m.u)) + lh(m.tiny, 2.6) + m.margin
	bannerH := m.margin + lh(m.title, 1.4) + lh(m.amount*3/4, 1.15) + max(4, int(m.u)) + int(2*m.u)
	type plan struct {
		a     arrangement
		area  image.Rectangle
		block codeBlock
	}
	plans := []plan{
		{a: stacked, area: image.Rect(r.Min.X+m.margin/2, r.Min.Y+headH+int(2*m.u), r.Max.X-m.margin/2, r.Max.Y-footH-int(2*m.u))},
		{a: side, area: image.Rect(r.Min.X+W*2/5, r.Min.Y+m.margin, r.Max.X-m.margin, r.Max.Y-m.margin)},
		{a: banner, area: image.Rect(r.Min.X+m.margin, r.Min.Y+bannerH, r.Max.X-m.margin, r.Max.Y-lh(m.tiny, 2.2)-m.margin/2)},
	}
	if !portrait {
		plans[0], plans[1] = plans[1], plans[0]
	}
	best := -1
	for i := range plans {
		plans[i].block = placeCodes(plans[i].area, len(codes), n, m)
		if best < 0 || plans[i].block.scale > plans[best].block.scale {
			best = i
		}
	}
	p := plans[best]
	if p.block.scale < 1 {
		return fmt.Errorf("screen %dx%d too small for a %d-module QR code", W, H, n)
	}

	// QR cards: accent frame, white square with the quiet zone, label.
	for i, card := range p.block.cards {
		acc := providerColour(codes[i].Provider)
		c.p.roundRect(dst, card, float64(m.radius), acc)
		sq := card.Inset(m.frame)
		drawQR(dst, sq, mods[i], p.block.scale)
		label := c.ts.fit(c.tx.provider(codes[i].Provider), bold, m.label, card.Dx())
		c.text(dst, label, bold, m.label, (card.Min.X+card.Max.X)/2, p.block.labelY, 0, acc)
	}

	accent := colText2
	if len(codes) == 1 {
		accent = providerColour(codes[0].Provider)
	}
	amount := f.Amount.String()
	order := ""
	if f.OutTradeNo != "" {
		order = c.tx.Order + " " + cleanText(f.OutTradeNo)
	}
	cd := &countdownArea{size: m.cd, accent: accent, start: f.start, expires: f.ExpiresAt}
	barH := max(4, int(m.u))
	// The countdown only gets shorter, so its width now, with every digit
	// as wide as the widest, bounds every later redraw.
	cdW := c.ts.width(strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return '0'
		}
		return r
	}, formatCountdown(remaining(f.ExpiresAt, now))), bold, m.cd)*11/10 + 2

	switch p.a {
	case stacked:
		cx := (r.Min.X + r.Max.X) / 2
		maxW := W - 2*m.margin
		y := r.Min.Y + m.margin + lh(m.title, 1.1)
		c.text(dst, c.ts.fit(c.tx.PayTitle, regular, m.title, maxW), regular, m.title, cx, y, 0, colText2)
		as := c.amountSize(amount, m.amount, maxW)
		y += lh(m.amount, 1.15)
		c.text(dst, amount, bold, as, cx, y, 0, colText)
		if subject != "" {
			y += lh(m.subject, 1.45)
			c.text(dst, c.ts.fit(subject, regular, m.subject, maxW), regular, m.subject, cx, y, 0, colText2)
		}
		y = r.Max.Y - footH + lh(m.cdLabel, 1.1)
		c.text(dst, c.tx.TimeLeft, regular, m.cdLabel, cx, y, 0, colText3)
		y += lh(m.cd, 1.05)
		cd.x, cd.align, cd.baseline = cx, 0, y
		cd.rect = image.Rect(cx-cdW/2, y-lh(m.cd, 0.9), cx+cdW/2+1, y+lh(m.cd, 0.2))
		bw := min(maxW, W*3/5)
		cd.bar = image.Rect(cx-bw/2, y+lh(m.cd, 0.35), cx+bw/2, y+lh(m.cd, 0.35)+barH)
		if order != "" {
			c.text(dst, c.ts.fit(order, regular, m.tiny, maxW), regular, m.tiny, cx, r.Max.Y-m.margin, 0, colText3)
		}
	case side:
		x := r.Min.X + m.margin
		maxW := p.block.cards[0].Min.X - x - m.margin
		if maxW < W/5 {
			maxW = W * 2 / 5
		}
		// Centre the text column vertically.
		colH := lh(m.title, 1.5) + lh(m.amount, 1.2) + lh(m.cdLabel, 1.5) + lh(m.cd, 1.1) + barH + int(4*m.u)
		if subject != "" {
			colH += lh(m.subject, 1.5)
		}
		y := r.Min.Y + (H-colH)/2 + lh(m.title, 1.0)
		c.text(dst, c.ts.fit(c.tx.PayTitle, regular, m.title, maxW), regular, m.title, x, y, -1, colText2)
		as := c.amountSize(amount, m.amount, maxW)
		y += lh(m.amount, 1.15)
		c.text(dst, amount, bold, as, x, y, -1, colText)
		if subject != "" {
			y += lh(m.subject, 1.5)
			c.text(dst, c.ts.fit(subject, regular, m.subject, maxW), regular, m.subject, x, y, -1, colText2)
		}
		y += int(4*m.u) + lh(m.cdLabel, 1.1)
		c.text(dst, c.tx.TimeLeft, regular, m.cdLabel, x, y, -1, colText3)
		y += lh(m.cd, 1.1)
		cd.x, cd.align, cd.baseline = x, -1, y
		cd.rect = image.Rect(x, y-lh(m.cd, 0.9), x+cdW+1, y+lh(m.cd, 0.2))
		cd.bar = image.Rect(x, y+lh(m.cd, 0.35), x+min(maxW, cdW*2), y+lh(m.cd, 0.35)+barH)
		if order != "" {
			c.text(dst, c.ts.fit(order, regular, m.tiny, maxW), regular, m.tiny, x, r.Max.Y-m.margin, -1, colText3)
		}
	case banner:
		x0, x1 := r.Min.X+m.margin, r.Max.X-m.margin
		half := (x1 - x0) / 2
		title := c.tx.PayTitle
		if subject != "" {
			title = subject
		}
		y := r.Min.Y + m.margin + lh(m.title, 1.0)
		c.text(dst, c.ts.fit(title, regular, m.title, half), regular, m.title, x0, y, -1, colText2)
		c.text(dst, c.tx.TimeLeft, regular, m.cdLabel, x1, y, 1, colText3)
		y += lh(m.amount*3/4, 1.1)
		as := c.amountSize(amount, m.amount*3/4, half)
		c.text(dst, amount, bold, as, x0, y, -1, colText)
		cd.x, cd.align, cd.baseline = x1, 1, y
		cd.rect = image.Rect(x1-cdW-1, y-lh(m.cd, 0.9), x1, y+lh(m.cd, 0.2))
		cd.bar = image.Rect(x0, y+int(1.5*m.u), x1, y+int(1.5*m.u)+barH/2+1)
		if order != "" {
			c.text(dst, c.ts.fit(order, regular, m.tiny, x1-x0), regular, m.tiny, (x0+x1)/2, r.Max.Y-m.margin/2-lh(m.tiny, 0.3), 0, colText3)
		}
	}
	if f.start.IsZero() || !f.start.Before(f.ExpiresAt) {
		cd.bar = image.Rectangle{}
	}
	c.cd = cd
	c.drawCountdown(dst, now, true)
	return nil
}

// drawCountdown redraws the countdown digits and bar; unless force, only
// when what they show changed. It returns the area it drew.
func (c *composer) drawCountdown(dst *image.RGBA, now time.Time, force bool) image.Rectangle {
	cd := c.cd
	left := remaining(cd.expires, now)
	txt := formatCountdown(left)
	barW := 0
	if !cd.bar.Empty() {
		total := cd.expires.Sub(cd.start)
		barW = int(float64(cd.bar.Dx()) * float64(left) / float64(total))
		barW = max(0, min(cd.bar.Dx(), barW))
	}
	if !force && txt == c.cdText && barW == c.cdBar {
		return image.Rectangle{}
	}
	c.cdText, c.cdBar = txt, barW
	col := colText
	acc := cd.accent
	if left <= time.Minute {
		col, acc = colWarn, colWarn
	}
	fillRect(dst, cd.rect, colBackground)
	c.text(dst, txt, bold, cd.size, cd.x, cd.baseline, cd.align, col)
	dirty := cd.rect
	if !cd.bar.Empty() {
		fillRect(dst, cd.bar, colBackground)
		c.p.roundRect(dst, cd.bar, float64(cd.bar.Dy())/2, colTrack)
		if barW > 0 {
			fill := cd.bar
			if cd.align == 1 {
				fill.Min.X = fill.Max.X - barW
			} else {
				fill.Max.X = fill.Min.X + barW
			}
			c.p.roundRect(dst, fill, float64(cd.bar.Dy())/2, acc)
		}
		dirty = dirty.Union(cd.bar)
	}
	return dirty.Intersect(dst.Rect)
}

func (c *composer) drawIdle(dst *image.RGBA) {
	r := dst.Rect
	m := metricsFor(r)
	W, H := r.Dx(), r.Dy()
	cx := (r.Min.X + r.Max.X) / 2
	maxW := W - 2*m.margin
	big := int(math.Round(10 * m.u))
	y := r.Min.Y + H*2/5
	c.text(dst, c.ts.fit(c.tx.IdleTitle, bold, big, maxW), bold, big, cx, y, 0, colText)
	y += lh(m.subject, 2.4)
	c.text(dst, c.ts.fit(c.tx.IdleHint, regular, m.subject, maxW), regular, m.subject, cx, y, 0, colText2)

	// "We accept" with a pill per provider.
	pillSize := m.label
	padX, padY := lh(pillSize, 0.7), lh(pillSize, 0.45)
	names := []string{c.tx.WxPay, c.tx.Alipay}
	cols := []color.RGBA{colWxPay, colAlipay}
	acc := c.tx.Accepted
	total := c.ts.width(acc, regular, m.subject) + m.gap/2
	for _, s := range names {
		total += c.ts.width(s, bold, pillSize) + 2*padX + m.gap/2
	}
	x := cx - total/2
	by := r.Min.Y + H*3/4
	c.text(dst, acc, regular, m.subject, x, by, -1, colText3)
	x += c.ts.width(acc, regular, m.subject) + m.gap/2
	for i, s := range names {
		w := c.ts.width(s, bold, pillSize) + 2*padX
		pill := image.Rect(x, by-pillSize-padY+lh(pillSize, 0.12), x+w, by+padY+lh(pillSize, 0.12))
		c.p.roundRect(dst, pill, float64(pill.Dy())/2, cols[i])
		c.text(dst, s, bold, pillSize, x+padX, by, -1, colCard)
		x += w + m.gap/2
	}
}

// drawStatus draws the paid, expired and error screens: an icon, a title,
// a detail line and a hint.
func (c *composer) drawStatus(dst *image.RGBA, k Kind, s *Screen) {
	r := dst.Rect
	m := metricsFor(r)
	W, H := r.Dx(), r.Dy()
	cx := float64(r.Min.X+r.Max.X) / 2
	maxW := W - 2*m.margin
	rad := 11 * m.u
	big := int(8 * m.u)
	var title, detail, hint string
	var icon color.RGBA
	detailSize, detailWeight, detailCol := m.subject, regular, colText2
	switch k {
	case Paid:
		icon, title, hint = colSuccess, c.tx.PaidTitle, c.tx.PaidHint
		if s.Amount != 0 {
			detail, detailSize, detailWeight, detailCol = s.Amount.String(), int(8*m.u), bold, colText
		}
	case Expired:
		icon, title, hint = colNeutral, c.tx.ExpiredTitle, c.tx.ExpiredHint
	default:
		icon, title, hint = colWarn, c.tx.ErrorTitle, c.tx.ErrorHint
		detail = c.outside(s.Message)
	}
	// Centre the group (icon, title, detail, hint) a little above the middle.
	titleGap := lh(big, 1.45)
	detailGap := 0
	if detail != "" {
		detailGap = lh(big, 0.3) + lh(detailSize, 1.3)
	}
	hintGap := lh(m.subject, 2.2)
	groupH := 2*rad + float64(titleGap+detailGap+hintGap) + float64(m.subject)*0.3
	cy := float64(r.Min.Y) + (float64(H)-groupH)*0.45 + rad
	c.p.circle(dst, cx, cy, rad, icon)
	sw := rad * 0.16
	switch k {
	case Paid:
		c.p.line(dst, cx-rad*0.42, cy+rad*0.02, cx-rad*0.12, cy+rad*0.32, sw, colCard)
		c.p.line(dst, cx-rad*0.12, cy+rad*0.32, cx+rad*0.45, cy-rad*0.28, sw, colCard)
	case Expired:
		c.p.line(dst, cx, cy, cx, cy-rad*0.5, sw, colCard)
		c.p.line(dst, cx, cy, cx+rad*0.38, cy+rad*0.12, sw, colCard)
	default:
		c.p.line(dst, cx, cy-rad*0.45, cx, cy+rad*0.12, sw*1.1, colCard)
		c.p.circle(dst, cx, cy+rad*0.45, sw*0.7, colCard)
	}
	y := int(cy+rad) + titleGap
	ix := int(cx)
	c.text(dst, c.ts.fit(title, bold, big, maxW), bold, big, ix, y, 0, colText)
	if detail != "" {
		y += detailGap
		if detailWeight == bold {
			detailSize = c.amountSize(detail, detailSize, maxW)
		}
		c.text(dst, c.ts.fit(detail, detailWeight, detailSize, maxW), detailWeight, detailSize, ix, y, 0, detailCol)
	}
	y += hintGap
	c.text(dst, c.ts.fit(hint, regular, m.subject, maxW), regular, m.subject, ix, y, 0, colText3)
}
