package main

import (
	"bytes"
	"fmt"
	"html"
	"slices"
	"strings"
)

// chart draws filestore's rate by layout and population from the layout
// grid as an SVG: one panel per filesystem and workload, a group of bars
// per population, a bar per layout. Only panels with figures are drawn;
// without a layout grid there is no chart, and chart returns nil.
func (r *report) chart() []byte {
	workloads := []string{wlLoad, wlRead, wlSave, wlSweep}
	var fss []string
	for _, t := range r.targets {
		fss = append(fss, t.name)
	}
	var pops []int
	val := map[string]float64{}
	for _, x := range r.rows {
		if x.Section != secLayouts || x.Subject != subjFilestore {
			continue
		}
		if !slices.Contains(pops, x.Pop) {
			pops = append(pops, x.Pop)
		}
		val[fmt.Sprintf("%s|%s|%d|%s", x.FS, x.Workload, x.Pop, x.Layout)] = x.OpsPerSec
	}
	slices.Sort(pops)
	// The panels that have figures, by filesystem; a filesystem without
	// any gets no row.
	panels := map[string][]string{}
	var rowsFS []string
	for _, fs := range fss {
		for _, w := range workloads {
			for k, v := range val {
				if v > 0 && strings.HasPrefix(k, fs+"|"+w+"|") {
					panels[fs] = append(panels[fs], w)
					break
				}
			}
		}
		if len(panels[fs]) > 0 {
			rowsFS = append(rowsFS, fs)
		}
	}
	if len(rowsFS) == 0 {
		return nil
	}
	cols := 0
	for _, fs := range rowsFS {
		cols = max(cols, len(panels[fs]))
	}
	colors := []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948"}

	const (
		pw, ph       = 300, 220 // panel
		padL, padT   = 60, 40
		top          = 60
		barGap, grpG = 2, 14
	)
	width := padL + cols*(pw+padL)
	height := top + len(rowsFS)*(ph+padT+30) + 10
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" font-weight="bold">filestore ops/s by shard layout and session count (%s payload, 1 process; sweep: files/s)</text>`+"\n",
		padL, sizeName(r.cfg.payloads[0]))
	for i, l := range r.cfg.layouts {
		x := padL + i*110
		fmt.Fprintf(&b, `<rect x="%d" y="32" width="12" height="12" fill="%s"/><text x="%d" y="42">%s (%d dirs)</text>`+"\n",
			x, colors[i%len(colors)], x+16, html.EscapeString(l), shardCount(l))
	}
	for fi, fs := range rowsFS {
		for wi, w := range panels[fs] {
			x0 := padL + wi*(pw+padL)
			y0 := top + fi*(ph+padT+30) + padT
			peak := 0.0
			for _, p := range pops {
				for _, l := range r.cfg.layouts {
					peak = max(peak, val[fmt.Sprintf("%s|%s|%d|%s", fs, w, p, l)])
				}
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13" font-weight="bold">%s: %s</text>`+"\n", x0, y0-10, fs, w)
			fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", x0, y0+ph, x0+pw, y0+ph)
			fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", x0, y0, x0, y0+ph)
			for _, f := range []float64{0.5, 1} {
				y := y0 + ph - int(f*float64(ph))
				fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/><text x="%d" y="%d" text-anchor="end">%s</text>`+"\n",
					x0, y, x0+pw, y, x0-4, y+4, human(f*peak))
			}
			grpW := (pw - grpG*(len(pops)+1)) / len(pops)
			barW := max((grpW-barGap*len(r.cfg.layouts))/len(r.cfg.layouts), 1)
			for pi, p := range pops {
				gx := x0 + grpG + pi*(grpW+grpG)
				for li, l := range r.cfg.layouts {
					v := val[fmt.Sprintf("%s|%s|%d|%s", fs, w, p, l)]
					h := int(v / peak * float64(ph))
					fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s %s %s %s: %s/s</title></rect>`+"\n",
						gx+li*(barW+barGap), y0+ph-h, barW, h, colors[li%len(colors)], fs, w, count(p), l, human(v))
				}
				fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s sessions</text>`+"\n", gx+grpW/2, y0+ph+15, count(p))
			}
		}
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}
