package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The comparison's charts, drawn with gonum.org/v1/plot:
//   - writeRPSChart: req/s against concurrency for one scenario, one line
//     per server; a point where the client was the limit is drawn hollow;
//   - writeCPUChart: server CPU µs per request, one panel per scenario, a
//     group of bars per concurrency and a bar per server, the crypto floor
//     as a red dashed line on the fresh panels.

// Chart sizes, in points (at chartDPI: 96 dpi makes 4/3 pixels a point).
const (
	chartDPI              = 96
	rpsChartW, rpsChartH  = 7 * vg.Inch, 4.5 * vg.Inch
	cpuPanelW, cpuPanelH  = 6 * vg.Inch, 3.6 * vg.Inch
	cpuChartCols          = 2
	chartTitleSize        = 13
	chartFloorDash        = 4
	chartHollowGlyphScale = 1.6
	chartHeadroom         = 1.35
)

var chartFloorColor = color.RGBA{200, 30, 30, 255}

// serverColor is a server's colour, the same in every chart.
func (s *Summary) serverColor(server string) color.Color {
	for i, name := range s.Servers {
		if name == server {
			return plotutil.Color(i)
		}
	}
	return color.Black
}

// writeRPSChart draws req/s against concurrency for sc to path. The x axis
// is logarithmic (concurrencies usually grow by a factor), labelled with the
// concurrencies measured.
func (s *Summary) writeRPSChart(path string, sc Scenario) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Throughput against concurrency, %s (medians)", sc)
	p.Title.TextStyle.Font.Size = chartTitleSize
	p.X.Label.Text = "clients (requests in flight)"
	p.Y.Label.Text = "requests/s"
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	var ticks []plot.Tick
	for _, n := range s.Levels {
		if n > 0 {
			ticks = append(ticks, plot.Tick{Value: math.Log2(float64(n)), Label: fmt.Sprint(n)})
		}
	}
	if len(ticks) == 0 {
		return fmt.Errorf("bench: chart %s: no concurrency to draw", path)
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.X.Min, p.X.Max = ticks[0].Value-0.3, ticks[len(ticks)-1].Value+0.3
	var anyLimited bool
	for _, server := range s.Servers {
		var pts, limited plotter.XYs
		for _, n := range s.Levels {
			c := s.cell(sc, n, server)
			if c == nil || n <= 0 || math.IsNaN(c.Throughput) {
				continue
			}
			xy := plotter.XY{X: math.Log2(float64(n)), Y: c.Throughput}
			pts = append(pts, xy)
			if c.ClientLimited() {
				limited = append(limited, xy)
			}
		}
		if len(pts) == 0 {
			continue
		}
		col := s.serverColor(server)
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("bench: chart %s: %w", path, err)
		}
		line.Color, line.Width = col, vg.Points(2)
		points.Color, points.Shape, points.Radius = col, draw.CircleGlyph{}, vg.Points(3.5)
		p.Add(line, points)
		p.Legend.Add(server, line, points)
		if len(limited) > 0 {
			anyLimited = true
			ring, err := plotter.NewScatter(limited)
			if err != nil {
				return fmt.Errorf("bench: chart %s: %w", path, err)
			}
			ring.Color, ring.Shape, ring.Radius = color.Black, draw.RingGlyph{}, vg.Points(3.5*chartHollowGlyphScale)
			p.Add(ring)
		}
	}
	headroom(p)
	if anyLimited {
		// A legend entry for the ring drawn around client-limited points
		// (the scatter itself is not added to the plot).
		key, err := plotter.NewScatter(plotter.XYs{{}})
		if err == nil {
			key.Color, key.Shape, key.Radius = color.Black, draw.RingGlyph{}, vg.Points(3.5*chartHollowGlyphScale)
			p.Legend.Add(fmt.Sprintf("client core > %.0f%% busy (the client was the limit)", ClientLimit*100), key)
		}
	}
	c := vgimg.NewWith(vgimg.UseWH(rpsChartW, rpsChartH), vgimg.UseDPI(chartDPI))
	p.Draw(draw.New(c))
	return writeCanvasPNG(path, c)
}

// writeCPUChart draws the server CPU per request to path: one panel per
// scenario, cpuChartCols panels a row.
func (s *Summary) writeCPUChart(path string) error {
	if len(s.Scenarios) == 0 || len(s.Levels) == 0 {
		return fmt.Errorf("bench: chart %s: nothing to draw", path)
	}
	cols := min(cpuChartCols, len(s.Scenarios))
	rows := (len(s.Scenarios) + cols - 1) / cols
	grid := make([][]*plot.Plot, rows)
	for r := range grid {
		grid[r] = make([]*plot.Plot, cols)
	}
	for i, sc := range s.Scenarios {
		p, err := s.cpuPanel(sc)
		if err != nil {
			return fmt.Errorf("bench: chart %s: %w", path, err)
		}
		grid[i/cols][i%cols] = p
	}
	c := vgimg.NewWith(vgimg.UseWH(cpuPanelW*vg.Length(cols), cpuPanelH*vg.Length(rows)), vgimg.UseDPI(chartDPI))
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 6, PadY: vg.Millimeter * 6,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(grid, tiles, dc)
	for r := range grid {
		for col, p := range grid[r] {
			if p != nil {
				p.Draw(canvases[r][col])
			}
		}
	}
	return writeCanvasPNG(path, c)
}

// cpuPanel is the bar chart of one scenario.
func (s *Summary) cpuPanel(sc Scenario) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Server CPU µs per request, %s (medians)", sc)
	p.Title.TextStyle.Font.Size = chartTitleSize
	p.Y.Label.Text = "CPU µs per request"
	p.Y.Min = 0
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	names := make([]string, len(s.Levels))
	for i, n := range s.Levels {
		names[i] = fmt.Sprintf("%d clients", n)
	}
	p.NominalX(names...)
	barW := vg.Points(math.Max(4, 300/float64(len(s.Levels)*max(1, len(s.Servers)))))
	for i, server := range s.Servers {
		vals := make(plotter.Values, len(s.Levels))
		measured := false
		for j, n := range s.Levels {
			if c := s.cell(sc, n, server); c != nil && !math.IsNaN(c.CPU) {
				vals[j], measured = c.CPU, true
			}
		}
		if !measured {
			continue
		}
		bars, err := plotter.NewBarChart(vals, barW)
		if err != nil {
			return nil, err
		}
		bars.Color = s.serverColor(server)
		bars.LineStyle.Width = 0
		bars.Offset = barW * vg.Length(float64(i)-float64(len(s.Servers)-1)/2)
		p.Add(bars)
		p.Legend.Add(server, bars)
	}
	if sc.Mode == ModeFresh && s.FloorUS > 0 {
		floor := plotter.NewFunction(func(float64) float64 { return s.FloorUS })
		floor.Color, floor.Width = chartFloorColor, vg.Points(1.5)
		floor.Dashes = []vg.Length{vg.Points(chartFloorDash), vg.Points(chartFloorDash)}
		p.Add(floor)
		p.Legend.Add("crypto floor (TLS 1.3)", floor)
		p.Y.Max = math.Max(p.Y.Max, s.FloorUS)
	}
	p.X.Min, p.X.Max = -0.5, float64(len(s.Levels))-0.5 // the floor spans every group
	headroom(p)
	return p, nil
}

// headroom raises the top of p's y axis so that the legend, drawn in the
// top corner, clears the data, and labels the y axis in whole numbers.
func headroom(p *plot.Plot) {
	p.Y.Max *= chartHeadroom
	p.Y.Tick.Marker = wholeTicks{}
}

// wholeTicks are plot.DefaultTicks labelled without decimals.
type wholeTicks struct{}

// Ticks implements plot.Ticker.
func (wholeTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = fmt.Sprintf("%.0f", ticks[i].Value)
		}
	}
	return ticks
}

// writeCanvasPNG encodes c as a PNG file at path.
func writeCanvasPNG(path string, c *vgimg.Canvas) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: chart: %w", err)
	}
	_, err = vgimg.PngCanvas{Canvas: c}.WriteTo(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("bench: chart %s: %w", path, err)
	}
	return nil
}
