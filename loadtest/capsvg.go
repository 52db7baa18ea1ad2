package loadtest

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"slices"
	"strings"
)

// ratePoint is one probe as the capacity plot draws it.
type ratePoint struct {
	rate, attainment float64
	pass             bool
}

// rateSeries is one policy's (or one cluster option's) probes and capacity.
type rateSeries struct {
	name     string
	points   []ratePoint
	capacity float64
	bounded  bool
}

// writeCapacitySVG draws the capacity plot: on the left, attainment against offered rate with a
// dashed line at the target (passing probes filled, failing ones hollow); on the right, one bar
// per series at its capacity (hatched-looking lighter bar when it is only a lower bound). It is
// always labelled SIMULATED: only simulated clusters are probed.
func writeCapacitySVG(w io.Writer, title, subtitle, xlabel, barLabel string, target float64, series []rateSeries) error {
	bw := bufio.NewWriter(w)
	p := &svgPainter{w: bw}
	p.f(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH, svgW, svgH)
	p.f(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p.text(svgW/2, 26, "middle", 15, title+" (SIMULATED cluster)")
	p.text(svgW/2, 44, "middle", 11, subtitle)

	maxRate := 0.0
	for _, s := range series {
		for _, pt := range s.points {
			maxRate = max(maxRate, pt.rate)
		}
	}
	xs := niceScale(maxRate)
	ys := axisScale{max: 100, step: 10}
	x0, x1 := float64(plotLeft), float64(svgW*0.62)
	y0, y1 := float64(topPanelY0+20), float64(bottomPanelY1-20)
	p.axesAt(x0, x1, y0, y1, xs, ys, xlabel, "% of requests within SLO")
	px := func(v float64) float64 { return x0 + v/xs.max*(x1-x0) }
	py := func(v float64) float64 { return y1 - v/ys.max*(y1-y0) }
	p.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#d62728" stroke-dasharray="6 4"/>`+"\n", x0, py(100*target), x1, py(100*target))
	p.text(x1-4, py(100*target)-5, "end", 11, fmt.Sprintf("target %g%%", 100*target))
	for i, s := range series {
		col := palette[i%len(palette)]
		pts := slices.Clone(s.points)
		slices.SortFunc(pts, func(a, b ratePoint) int {
			switch {
			case a.rate < b.rate:
				return -1
			case a.rate > b.rate:
				return 1
			}
			return 0
		})
		var line strings.Builder
		for _, pt := range pts {
			fmt.Fprintf(&line, "%.1f,%.1f ", px(pt.rate), py(100*pt.attainment))
		}
		p.f(`<polyline points="%s" fill="none" stroke="%s" stroke-width="1.8"/>`+"\n", strings.TrimSpace(line.String()), col)
		for _, pt := range pts {
			fill := col
			if !pt.pass {
				fill = "white"
			}
			p.f(`<circle cx="%.1f" cy="%.1f" r="4" fill="%s" stroke="%s" stroke-width="1.5"/>`+"\n", px(pt.rate), py(100*pt.attainment), fill, col)
		}
		if s.capacity > 0 {
			p.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1" stroke-dasharray="2 3"/>`+"\n", px(s.capacity), y0, px(s.capacity), y1, col)
		}
		// Legend.
		ly := 68.0
		lx := float64(plotLeft) + float64(i)*190
		p.f(`<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", lx+4, ly-4, col)
		p.text(lx+12, ly, "start", 12, s.name)
	}
	p.text(x0, y1+50, "start", 11, "filled: probe passed; hollow: probe failed; dotted: capacity")

	// Bars.
	bx0, bx1 := float64(svgW*0.62+90), float64(plotRight)
	maxCap := 0.0
	for _, s := range series {
		maxCap = max(maxCap, s.capacity)
	}
	cs := niceScale(maxCap)
	p.f(`<g stroke="#ddd" stroke-width="1">` + "\n")
	for v := 0.0; v <= cs.max+cs.step/2; v += cs.step {
		y := y1 - v/cs.max*(y1-y0)
		p.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", bx0, y, bx1, y)
	}
	p.f("</g>\n")
	p.f(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", bx0, y0, bx1-bx0, y1-y0)
	for v := 0.0; v <= cs.max+cs.step/2; v += cs.step {
		p.text(bx0-6, y1-v/cs.max*(y1-y0)+4, "end", 11, tickLabel(v))
	}
	p.f(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="12" transform="rotate(-90 %.1f %.1f)">`, bx0-48, (y0+y1)/2, bx0-48, (y0+y1)/2)
	p.f("%s</text>\n", xmlEscape(barLabel))
	n := float64(max(len(series), 1))
	slot := (bx1 - bx0) / n
	for i, s := range series {
		col := palette[i%len(palette)]
		h := s.capacity / cs.max * (y1 - y0)
		bx := bx0 + float64(i)*slot + slot*0.2
		op := "0.85"
		if !s.bounded {
			op = "0.4"
		}
		p.f(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="%s"/>`+"\n", bx, y1-h, slot*0.6, h, col, op)
		label := fmt.Sprintf("%.2f", s.capacity)
		if !s.bounded {
			label = "≥ " + label
		}
		p.text(bx+slot*0.3, y1-h-5, "middle", 11, label)
		p.text(bx+slot*0.3, y1+30, "middle", 11, s.name)
	}
	p.f("</svg>\n")
	if p.err != nil {
		return p.err
	}
	return bw.Flush()
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder does not fail
	return b.String()
}

// ScatterPoint is one labelled point of WriteScatterSVG.
type ScatterPoint struct {
	Label string
	X, Y  float64
	// Kind picks the marker: "pass" (filled green), "fail" (red cross), anything else hollow.
	Kind string
}

// WriteScatterSVG draws labelled points on one panel with a dashed horizontal line at hline
// (none when 0), for comparisons such as herd plan's capacity against price. The title is
// marked SIMULATED: the plots this package draws come from simulated clusters.
func WriteScatterSVG(w io.Writer, title, xlabel, ylabel string, hline float64, hlineLabel string, pts []ScatterPoint) error {
	bw := bufio.NewWriter(w)
	p := &svgPainter{w: bw}
	p.f(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH, svgW, svgH)
	p.f(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p.text(svgW/2, 28, "middle", 15, title+" (SIMULATED)")
	maxX, maxY := 0.0, hline
	for _, pt := range pts {
		maxX, maxY = max(maxX, pt.X), max(maxY, pt.Y)
	}
	xs, ys := niceScale(maxX*1.05), niceScale(maxY*1.1)
	x0, x1 := float64(plotLeft), float64(plotRight)
	y0, y1 := float64(topPanelY0), float64(bottomPanelY1)
	p.axesAt(x0, x1, y0, y1, xs, ys, xlabel, ylabel)
	px := func(v float64) float64 { return x0 + v/xs.max*(x1-x0) }
	py := func(v float64) float64 { return y1 - v/ys.max*(y1-y0) }
	if hline > 0 {
		p.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#d62728" stroke-dasharray="6 4"/>`+"\n", x0, py(hline), x1, py(hline))
		p.text(x1-4, py(hline)-5, "end", 11, hlineLabel)
	}
	for _, pt := range pts {
		x, y := px(pt.X), py(pt.Y)
		switch pt.Kind {
		case "pass":
			p.f(`<circle cx="%.1f" cy="%.1f" r="5" fill="#2ca02c"/>`+"\n", x, y)
		case "fail":
			p.f(`<path d="M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f" stroke="%s" stroke-width="2"/>`+"\n", x-5, y-5, x+5, y+5, x-5, y+5, x+5, y-5, errorColor)
		default:
			p.f(`<circle cx="%.1f" cy="%.1f" r="5" fill="white" stroke="#1f77b4" stroke-width="1.5"/>`+"\n", x, y)
		}
		p.text(x+8, y-6, "start", 10, pt.Label)
	}
	p.text(x0, 52, "start", 11, "green: verified pass on a simulated cluster; red cross: verified fail; hollow: analytic estimate only")
	p.f("</svg>\n")
	if p.err != nil {
		return p.err
	}
	return bw.Flush()
}
