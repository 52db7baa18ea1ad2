package loadtest

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// SVG geometry. The plot is drawn by hand: three panels, latency over time on top, the TTFT
// histogram and CDF below.
const (
	svgW, svgH       = 960, 720
	plotLeft         = 70
	plotRight        = svgW - 20
	topPanelY0       = 70
	topPanelY1       = 360
	bottomPanelY0    = 440
	bottomPanelY1    = 670
	bottomSplit      = svgW / 2
	histBins         = 30
	maxScatterPoints = 6000
	maxCDFPoints     = 400
)

var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#e377c2"}

const errorColor = "#d62728"

// WriteSVG writes the report as an SVG image: end-to-end latency of every request over the run
// (failures as red crosses), and the TTFT histogram and CDF.
func (r *Report) WriteSVG(w io.Writer) error {
	title := "load test"
	if r.Label != "" {
		title += " — " + r.Label
	}
	return WriteSVG(w, title, r)
}

// WriteSVG draws one or several runs in one image, one colour per run (named by its Label), so
// that runs of the same workload can be compared. A run measured on a simulated cluster makes the
// title say so.
func WriteSVG(w io.Writer, title string, runs ...*Report) error {
	bw := bufio.NewWriter(w)
	sim := false
	for _, r := range runs {
		sim = sim || r.Simulated
	}
	if sim {
		title += " (SIMULATED cluster)"
	}
	p := &svgPainter{w: bw}
	p.f(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH, svgW, svgH)
	p.f(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p.text(svgW/2, 28, "middle", 16, title)

	// Latency over time.
	var maxT, maxLat time.Duration
	for _, r := range runs {
		for _, s := range r.samples {
			maxT = max(maxT, s.Start)
			maxLat = max(maxLat, s.Latency)
		}
	}
	xs := niceScale(maxT.Seconds())
	ys := niceScale(ms(maxLat))
	p.axesAt(plotLeft, plotRight, topPanelY0, topPanelY1, xs, ys, "time into the run (s)", "end-to-end latency (ms)")
	px := func(v float64) float64 { return plotLeft + v/xs.max*(plotRight-plotLeft) }
	py := func(v, y0, y1, vmax float64) float64 { return y1 - v/vmax*(y1-y0) }
	for i, r := range runs {
		col := palette[i%len(palette)]
		step := max(1, len(r.samples)/maxScatterPoints)
		p.f(`<g fill="%s" fill-opacity="0.55">`+"\n", col)
		for j := 0; j < len(r.samples); j += step {
			s := r.samples[j]
			if s.OK() {
				p.f(`<circle cx="%.1f" cy="%.1f" r="1.8"/>`+"\n", px(s.Start.Seconds()), py(ms(s.Latency), topPanelY0, topPanelY1, ys.max))
			}
		}
		p.f("</g>\n")
		p.f(`<g stroke="%s" stroke-width="1.2">`+"\n", errorColor)
		for j := 0; j < len(r.samples); j += step {
			s := r.samples[j]
			if !s.OK() {
				x, y := px(s.Start.Seconds()), py(ms(s.Latency), topPanelY0, topPanelY1, ys.max)
				p.f(`<path d="M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f"/>`+"\n", x-3, y-3, x+3, y+3, x-3, y+3, x+3, y-3)
			}
		}
		p.f("</g>\n")
	}
	// Legend: one row under the title.
	lx, ly := float64(plotLeft), 52.0
	for i, r := range runs {
		name := r.Label
		if name == "" {
			name = fmt.Sprintf("run %d", i+1)
		}
		label := fmt.Sprintf("%s (%d ok, %d failed)", name, r.Succeeded, r.Failed)
		p.f(`<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", lx+4, ly-4, palette[i%len(palette)])
		p.text(lx+12, ly, "start", 12, label)
		lx += 30 + 6.5*float64(len([]rune(label)))
	}
	p.f(`<path d="M%.1f %.1fl6 6m0 -6l-6 6" stroke="%s" stroke-width="1.2"/>`+"\n", lx+1, ly-7, errorColor)
	p.text(lx+12, ly, "start", 12, "failed request")
	p.text(plotLeft, bottomPanelY0-10, "start", 12, "TTFT histogram (successful requests)")
	p.text(bottomSplit+50, bottomPanelY0-10, "start", 12, "TTFT CDF")

	// TTFT histogram and CDF, over successful requests.
	ttfts := make([][]time.Duration, len(runs))
	var maxTTFT time.Duration
	for i, r := range runs {
		for _, s := range r.samples {
			if s.OK() {
				ttfts[i] = append(ttfts[i], s.TTFT)
			}
		}
		slices.Sort(ttfts[i])
		if n := len(ttfts[i]); n > 0 {
			maxTTFT = max(maxTTFT, ttfts[i][n-1])
		}
	}
	ts := niceScale(ms(maxTTFT))
	histL, histR := float64(plotLeft), float64(bottomSplit-30)
	cdfL, cdfR := float64(bottomSplit+50), float64(plotRight)
	counts := make([][]int, len(runs))
	maxFrac := 0.0
	for i, d := range ttfts {
		counts[i] = make([]int, histBins)
		for _, v := range d {
			b := min(int(ms(v)/ts.max*histBins), histBins-1)
			counts[i][b]++
		}
		for _, c := range counts[i] {
			if len(d) > 0 {
				maxFrac = max(maxFrac, float64(c)/float64(len(d)))
			}
		}
	}
	fs := niceScale(maxFrac * 100)
	p.axesAt(histL, histR, bottomPanelY0, bottomPanelY1, ts, fs, "TTFT (ms)", "% of requests")
	for i, d := range ttfts {
		if len(d) == 0 {
			continue
		}
		var path strings.Builder
		fmt.Fprintf(&path, "M%.1f %.1f", histL, float64(bottomPanelY1))
		for b, c := range counts[i] {
			x0 := histL + float64(b)/histBins*(histR-histL)
			x1 := histL + float64(b+1)/histBins*(histR-histL)
			y := py(float64(c)/float64(len(d))*100, bottomPanelY0, bottomPanelY1, fs.max)
			fmt.Fprintf(&path, "L%.1f %.1fL%.1f %.1f", x0, y, x1, y)
		}
		fmt.Fprintf(&path, "L%.1f %.1fZ", histR, float64(bottomPanelY1))
		col := palette[i%len(palette)]
		p.f(`<path d="%s" fill="%s" fill-opacity="0.2" stroke="%s" stroke-width="1.2"/>`+"\n", path.String(), col, col)
	}
	p.axesAt(cdfL, cdfR, bottomPanelY0, bottomPanelY1, ts, axisScale{max: 1, step: 0.25}, "TTFT (ms)", "fraction of requests ≤ x")
	for i, d := range ttfts {
		if len(d) == 0 {
			continue
		}
		var pts strings.Builder
		step := max(1, len(d)/maxCDFPoints)
		for j := 0; j < len(d); j += step {
			x := cdfL + ms(d[j])/ts.max*(cdfR-cdfL)
			y := py(float64(j+1)/float64(len(d)), bottomPanelY0, bottomPanelY1, 1)
			fmt.Fprintf(&pts, "%.1f,%.1f ", x, y)
		}
		x := cdfL + ms(d[len(d)-1])/ts.max*(cdfR-cdfL)
		fmt.Fprintf(&pts, "%.1f,%.1f", x, float64(bottomPanelY0))
		p.f(`<polyline points="%s" fill="none" stroke="%s" stroke-width="1.8"/>`+"\n", pts.String(), palette[i%len(palette)])
	}
	p.f("</svg>\n")
	if p.err != nil {
		return p.err
	}
	return bw.Flush()
}

// axisScale is an axis from 0 to max with ticks every step.
type axisScale struct{ max, step float64 }

// niceScale returns an axis from 0 that covers v with 4–10 ticks at 1, 2 or 5 × 10ⁿ.
func niceScale(v float64) axisScale {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return axisScale{max: 1, step: 0.25}
	}
	raw := v / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	return axisScale{max: math.Ceil(v/step-1e-9) * step, step: step}
}

// svgPainter writes SVG elements and keeps the first write error.
type svgPainter struct {
	w   io.Writer
	err error
}

func (p *svgPainter) f(format string, args ...any) {
	if p.err != nil {
		return
	}
	_, p.err = fmt.Fprintf(p.w, format, args...)
}

func (p *svgPainter) text(x, y float64, anchor string, size int, s string) {
	var esc strings.Builder
	_ = xml.EscapeText(&esc, []byte(s)) // a strings.Builder does not fail
	p.f(`<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d">%s</text>`+"\n", x, y, anchor, size, esc.String())
}

// axesAt draws a frame, grid lines, tick labels and axis titles for the panel [x0,x1]×[y0,y1].
func (p *svgPainter) axesAt(x0, x1, y0, y1 float64, xs, ys axisScale, xlabel, ylabel string) {
	p.f(`<g stroke="#ddd" stroke-width="1">` + "\n")
	for v := 0.0; v <= xs.max+xs.step/2; v += xs.step {
		x := x0 + v/xs.max*(x1-x0)
		p.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x, y0, x, y1)
	}
	for v := 0.0; v <= ys.max+ys.step/2; v += ys.step {
		y := y1 - v/ys.max*(y1-y0)
		p.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x0, y, x1, y)
	}
	p.f("</g>\n")
	p.f(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", x0, y0, x1-x0, y1-y0)
	for v := 0.0; v <= xs.max+xs.step/2; v += xs.step {
		p.text(x0+v/xs.max*(x1-x0), y1+16, "middle", 11, tickLabel(v))
	}
	for v := 0.0; v <= ys.max+ys.step/2; v += ys.step {
		p.text(x0-6, y1-v/ys.max*(y1-y0)+4, "end", 11, tickLabel(v))
	}
	p.text((x0+x1)/2, y1+34, "middle", 12, xlabel)
	p.f(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="12" transform="rotate(-90 %.1f %.1f)">`, x0-48, (y0+y1)/2, x0-48, (y0+y1)/2)
	var esc strings.Builder
	_ = xml.EscapeText(&esc, []byte(ylabel))
	p.f("%s</text>\n", esc.String())
}

func tickLabel(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}
