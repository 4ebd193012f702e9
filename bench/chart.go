package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strings"
)

// The chart: one group of bars per scenario, one bar per server (median
// server CPU µs per request) with a whisker for the range of the runs, and
// the crypto floor as a red line over the fresh scenarios. Drawn with the
// standard library and a built-in 5×7 bitmap font, so that no plotting or
// font package is needed.

var (
	chartBG     = color.RGBA{255, 255, 255, 255}
	chartInk    = color.RGBA{30, 30, 30, 255}
	chartGrid   = color.RGBA{225, 225, 225, 255}
	chartFloor  = color.RGBA{200, 30, 30, 255}
	chartColors = []color.RGBA{
		{31, 119, 180, 255}, // fleetgate
		{44, 160, 44, 255},  // nginx
		{255, 127, 14, 255}, // haproxy
		{148, 103, 189, 255},
		{140, 86, 75, 255},
		{127, 127, 127, 255},
	}
)

const (
	chartW, chartH             = 1000, 520
	chartLeft, chartRight      = 80, 20
	chartTop, chartBottom      = 60, 90
	fontScale                  = 2
	glyphW, glyphH, glyphSpace = 5, 7, 1
)

// writePNG draws the summary's chart to path.
func (s *Summary) writePNG(path string) error {
	img := image.NewRGBA(image.Rect(0, 0, chartW, chartH))
	fillRect(img, img.Bounds(), chartBG)

	top := s.FloorUS
	for _, byServer := range s.Cells {
		for _, c := range byServer {
			if !math.IsNaN(c.CPUMax) {
				top = max(top, c.CPUMax)
			}
		}
	}
	if top <= 0 {
		top = 1
	}
	step := niceStep(top / 5)
	top = math.Ceil(top/step) * step
	plotH := chartH - chartTop - chartBottom
	plotW := chartW - chartLeft - chartRight
	y := func(v float64) int { return chartTop + plotH - int(v/top*float64(plotH)) }

	drawText(img, chartLeft, 16, "SERVER CPU US PER REQUEST (MEDIAN, RANGE); RED: CRYPTO FLOOR", chartInk)
	for v := 0.0; v <= top+step/2; v += step {
		yy := y(v)
		fillRect(img, image.Rect(chartLeft, yy, chartLeft+plotW, yy+1), chartGrid)
		label := fmt.Sprintf("%.0f", v)
		drawText(img, chartLeft-8-textWidth(label), yy-glyphH*fontScale/2, label, chartInk)
	}
	fillRect(img, image.Rect(chartLeft, chartTop, chartLeft+1, chartTop+plotH+1), chartInk)
	fillRect(img, image.Rect(chartLeft, chartTop+plotH, chartLeft+plotW, chartTop+plotH+1), chartInk)

	nsc, nsv := len(s.Scenarios), len(s.Servers)
	if nsc == 0 || nsv == 0 {
		return writePNGFile(path, img)
	}
	groupW := plotW / nsc
	barW := max(4, (groupW-30)/nsv)
	for gi, sc := range s.Scenarios {
		gx := chartLeft + gi*groupW + (groupW-barW*nsv)/2
		for si, server := range s.Servers {
			c := s.cell(sc, server)
			if c == nil || math.IsNaN(c.CPU) {
				continue
			}
			x0 := gx + si*barW
			fillRect(img, image.Rect(x0+2, y(c.CPU), x0+barW-2, chartTop+plotH), chartColors[si%len(chartColors)])
			mid := x0 + barW/2
			fillRect(img, image.Rect(mid, y(c.CPUMax), mid+1, y(c.CPUMin)+1), chartInk)
			fillRect(img, image.Rect(mid-4, y(c.CPUMax), mid+5, y(c.CPUMax)+1), chartInk)
			fillRect(img, image.Rect(mid-4, y(c.CPUMin), mid+5, y(c.CPUMin)+1), chartInk)
		}
		if sc.Mode == ModeFresh && s.FloorUS > 0 {
			fy := y(s.FloorUS)
			fillRect(img, image.Rect(gx-6, fy-1, gx+barW*nsv+6, fy+1), chartFloor)
		}
		name := strings.ToUpper(sc.String())
		drawText(img, chartLeft+gi*groupW+(groupW-textWidth(name))/2, chartTop+plotH+10, name, chartInk)
	}
	lx := chartLeft
	ly := chartH - 30
	for si, server := range s.Servers {
		fillRect(img, image.Rect(lx, ly, lx+14, ly+14), chartColors[si%len(chartColors)])
		name := strings.ToUpper(server)
		drawText(img, lx+20, ly, name, chartInk)
		lx += 20 + textWidth(name) + 30
	}
	return writePNGFile(path, img)
}

func writePNGFile(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: chart: %w", err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("bench: chart: %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: chart: %w", err)
	}
	return nil
}

// niceStep rounds a raw axis step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func fillRect(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

func textWidth(s string) int {
	return len([]rune(s)) * (glyphW + glyphSpace) * fontScale
}

// drawText draws s with its top-left corner at (x, y); characters without
// a glyph are drawn as blanks.
func drawText(img *image.RGBA, x, y int, s string, c color.RGBA) {
	for _, r := range strings.ToUpper(s) {
		if g, ok := glyphs[r]; ok {
			for row, bits := range g {
				for col := 0; col < glyphW; col++ {
					if bits&(1<<(glyphW-1-col)) != 0 {
						fillRect(img, image.Rect(x+col*fontScale, y+row*fontScale, x+(col+1)*fontScale, y+(row+1)*fontScale), c)
					}
				}
			}
		}
		x += (glyphW + glyphSpace) * fontScale
	}
}

// glyphs is a 5×7 bitmap font: each row's 5 low bits, left pixel first.
var glyphs = map[rune][glyphH]uint8{
	'A': {0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11},
	'B': {0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e},
	'C': {0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e},
	'D': {0x1e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1e},
	'E': {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f},
	'F': {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10},
	'G': {0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f},
	'H': {0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11},
	'I': {0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e},
	'J': {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c},
	'K': {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11},
	'L': {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f},
	'M': {0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11},
	'N': {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11},
	'O': {0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e},
	'P': {0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10},
	'Q': {0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d},
	'R': {0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11},
	'S': {0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e},
	'T': {0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},
	'U': {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e},
	'V': {0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04},
	'W': {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a},
	'X': {0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11},
	'Y': {0x11, 0x11, 0x11, 0x0a, 0x04, 0x04, 0x04},
	'Z': {0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f},
	'0': {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e},
	'1': {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e},
	'2': {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f},
	'3': {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e},
	'4': {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02},
	'5': {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e},
	'6': {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e},
	'7': {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},
	'8': {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e},
	'9': {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c},
	' ': {},
	'.': {0, 0, 0, 0, 0, 0x0c, 0x0c},
	',': {0, 0, 0, 0, 0x0c, 0x04, 0x08},
	';': {0, 0x0c, 0x0c, 0, 0x0c, 0x04, 0x08},
	':': {0, 0x0c, 0x0c, 0, 0x0c, 0x0c, 0},
	'-': {0, 0, 0, 0x1f, 0, 0, 0},
	'/': {0, 0x01, 0x02, 0x04, 0x08, 0x10, 0},
	'(': {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02},
	')': {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08},
	'%': {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03},
	'=': {0, 0, 0x1f, 0, 0x1f, 0, 0},
	'+': {0, 0x04, 0x04, 0x1f, 0x04, 0x04, 0},
}
