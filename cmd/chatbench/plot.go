package main

import (
	"errors"
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// plotTimeline draws deliveries per second (top) and p50/p99 latency
// (bottom) against seconds since the first point, into a PNG file.
func plotTimeline(path string, s *summary) error {
	if len(s.Timeline) == 0 {
		return errors.New("no timeline to plot (connect and expiry runs send no messages)")
	}
	line := s.Timeline
	xLabel := "seconds"
	if len(line) > 3 {
		// The first and last seconds are partial: they would plot as dips.
		line = line[1 : len(line)-1]
		xLabel = "seconds (whole ones: the partial first and last are left out)"
	}
	t0 := line[0].Unix
	rate := make(plotter.XYs, len(line))
	p50 := make(plotter.XYs, len(line))
	p99 := make(plotter.XYs, len(line))
	var top99 float64
	for i, p := range line {
		top99 = max(top99, p.P99)
		x := float64(p.Unix - t0)
		rate[i] = plotter.XY{X: x, Y: float64(p.DeliveriesPerSecond)}
		p50[i] = plotter.XY{X: x, Y: p.P50}
		p99[i] = plotter.XY{X: x, Y: p.P99}
	}

	top := plot.New()
	top.Title.Text = fmt.Sprintf("chatbench %s: %d sockets, %d process(es)", s.Command, s.Connected, s.Procs)
	top.X.Label.Text = xLabel
	top.Y.Label.Text = "deliveries/s"
	top.Y.Min = 0
	top.Add(plotter.NewGrid())
	rl, err := plotter.NewLine(rate)
	if err != nil {
		return err
	}
	rl.Color = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	rl.Width = vg.Points(1.5)
	top.Add(rl)

	bottom := plot.New()
	bottom.X.Label.Text = xLabel
	bottom.Y.Label.Text = "latency (ms)"
	bottom.Y.Min = 0
	bottom.Add(plotter.NewGrid())
	for _, series := range []struct {
		name string
		xys  plotter.XYs
		c    color.RGBA
	}{
		{"p50", p50, color.RGBA{R: 44, G: 160, B: 44, A: 255}},
		{"p99", p99, color.RGBA{R: 214, G: 39, B: 40, A: 255}},
	} {
		l, err := plotter.NewLine(series.xys)
		if err != nil {
			return err
		}
		l.Color = series.c
		l.Width = vg.Points(1.5)
		bottom.Add(l)
		bottom.Legend.Add(series.name, l)
	}
	bottom.Legend.Top = true
	bottom.Legend.Left = true
	bottom.Y.Max = top99 * 1.3 // room for the legend

	img := vgimg.New(vg.Points(800), vg.Points(560))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: 4, PadBottom: 4, PadLeft: 4, PadRight: 8, PadY: 12}
	plots := [][]*plot.Plot{{top}, {bottom}}
	canvases := plot.Align(plots, tiles, dc)
	top.Draw(canvases[0][0])
	bottom.Draw(canvases[1][0])

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
