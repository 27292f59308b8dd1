//! Dependency-free SVG charts for the report: a line chart (training curves) and a grouped bar chart (the CORP
//! sweep, codebook utilisation). Plain SVG 1.1 that browsers, GitHub and most Markdown viewers render.

use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
/// Colour-blind-safe palette (Okabe-Ito), cycled.
const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

/// One named curve: `(x, y)` points in drawing order. Non-finite points are skipped.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart of several series on shared axes.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// Grouped bars: for each category one bar per group.
#[derive(Debug, Clone)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// `(group name, one value per category)`.
    pub groups: Vec<(String, Vec<f64>)>,
}

/// About five round tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::EPSILON);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The frame shared by both charts: background, title, axis labels, y grid and ticks. Returns the SVG so far.
fn frame(
    title: &str,
    x_label: &str,
    y_label: &str,
    y_ticks: &[f64],
    y: impl Fn(f64) -> f64,
) -> String {
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>\n",
        (LEFT + WIDTH - RIGHT) / 2.0,
        escape(title),
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 12.0,
        escape(x_label),
        (TOP + HEIGHT - BOTTOM) / 2.0,
        (TOP + HEIGHT - BOTTOM) / 2.0,
        escape(y_label),
    );
    for &t in y_ticks {
        let py = y(t);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            fmt_tick(t)
        );
    }
    let _ = writeln!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#444\"/>",
        WIDTH - LEFT - RIGHT,
        HEIGHT - TOP - BOTTOM
    );
    s
}

fn legend(s: &mut String, names: impl Iterator<Item = String>, bars: bool) {
    for (i, name) in names.enumerate() {
        let (x, y) = (WIDTH - RIGHT + 12.0, TOP + 10.0 + 18.0 * i as f64);
        let colour = PALETTE[i % PALETTE.len()];
        if bars {
            let _ = write!(
                s,
                "<rect x=\"{x}\" y=\"{:.1}\" width=\"14\" height=\"10\" fill=\"{colour}\"/>",
                y - 5.0
            );
        } else {
            let _ = write!(
                s,
                "<line x1=\"{x}\" y1=\"{y}\" x2=\"{:.1}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"2.5\"/>",
                x + 14.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x + 20.0,
            y + 4.0,
            escape(&name)
        );
    }
}

/// Expands a degenerate range so a flat curve still gets a visible axis.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if hi - lo > f64::EPSILON * hi.abs().max(1.0) {
        (lo, hi)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    }
}

impl LineChart {
    /// The chart as an SVG document. Series without a finite point are left out; with none at all the plot area
    /// says "no data".
    pub fn svg(&self) -> String {
        let series: Vec<(usize, Vec<(f64, f64)>)> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let p = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect::<Vec<_>>();
                (i, p)
            })
            .filter(|(_, p)| !p.is_empty())
            .collect();
        let all = series.iter().flat_map(|(_, p)| p.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in all {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if series.is_empty() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        let (x0, x1) = padded(x0, x1);
        let (y0, y1) = padded(y0, y1);
        let (y0, y1) = (y0 - 0.04 * (y1 - y0), y1 + 0.04 * (y1 - y0));
        let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT);
        let py = |y: f64| HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM);
        let mut s = frame(
            &self.title,
            &self.x_label,
            &self.y_label,
            &ticks(y0, y1),
            py,
        );
        for t in ticks(x0, x1) {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                px(t),
                HEIGHT - BOTTOM + 16.0,
                fmt_tick(t)
            );
        }
        if series.is_empty() {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#888\">no data</text>",
                (LEFT + WIDTH - RIGHT) / 2.0,
                (TOP + HEIGHT - BOTTOM) / 2.0
            );
        }
        for (k, (i, points)) in series.iter().enumerate() {
            let colour = PALETTE[k % PALETTE.len()];
            let path: Vec<String> = points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
                path.join(" "),
                escape(&self.series[*i].name)
            );
            // Short curves (a few epochs) get a marker on every point so single points stay visible.
            if points.len() <= 40 {
                for &(x, y) in points {
                    let _ = writeln!(
                        s,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                        px(x),
                        py(y)
                    );
                }
            }
        }
        legend(
            &mut s,
            series.iter().map(|(i, _)| self.series[*i].name.clone()),
            false,
        );
        s.push_str("</svg>\n");
        s
    }
}

impl BarChart {
    /// The chart as an SVG document; the y axis starts at 0 (values are rates and metrics). Non-finite values
    /// draw no bar.
    pub fn svg(&self) -> String {
        let max = self
            .groups
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let y1 = if max > 0.0 { max * 1.08 } else { 1.0 };
        let py = |y: f64| HEIGHT - BOTTOM - y / y1 * (HEIGHT - TOP - BOTTOM);
        let mut s = frame(&self.title, "", &self.y_label, &ticks(0.0, y1), py);
        let n_cat = self.categories.len().max(1) as f64;
        let slot = (WIDTH - LEFT - RIGHT) / n_cat;
        let n_groups = self.groups.len().max(1) as f64;
        let bar = slot * 0.8 / n_groups;
        for (c, name) in self.categories.iter().enumerate() {
            let x = LEFT + slot * c as f64;
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x + slot / 2.0,
                HEIGHT - BOTTOM + 16.0,
                escape(name)
            );
            for (g, (gname, values)) in self.groups.iter().enumerate() {
                let Some(&v) = values.get(c).filter(|v| v.is_finite()) else {
                    continue;
                };
                let _ = writeln!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\">\
                     <title>{}: {}</title></rect>",
                    x + slot * 0.1 + bar * g as f64,
                    py(v.max(0.0)),
                    bar,
                    py(0.0) - py(v.max(0.0)),
                    PALETTE[g % PALETTE.len()],
                    escape(gname),
                    fmt_tick(v)
                );
            }
        }
        legend(&mut s, self.groups.iter().map(|(n, _)| n.clone()), true);
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polyline_points(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.lines()
            .filter_map(|l| l.split("points=\"").nth(1))
            .map(|rest| {
                rest.split('"')
                    .next()
                    .unwrap()
                    .split(' ')
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn line_chart_maps_points_inside_the_plot_area_in_order() {
        let chart = LineChart {
            title: "loss <a & b>".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            series: vec![
                Series {
                    name: "rising".into(),
                    points: vec![(0.0, 1.0), (10.0, 2.0), (20.0, 3.0)],
                },
                Series {
                    name: "nan only".into(),
                    points: vec![(1.0, f64::NAN)],
                },
            ],
        };
        let svg = chart.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("loss &lt;a &amp; b&gt;"),
            "title must be escaped"
        );
        assert!(
            !svg.contains("nan only"),
            "a series without finite points is left out"
        );
        let lines = polyline_points(&svg);
        assert_eq!(lines.len(), 1);
        let p = &lines[0];
        assert_eq!(p.len(), 3);
        for &(x, y) in p {
            assert!(
                (LEFT..=WIDTH - RIGHT).contains(&x),
                "x {x} outside the plot"
            );
            assert!(
                (TOP..=HEIGHT - BOTTOM).contains(&y),
                "y {y} outside the plot"
            );
        }
        // x increases left to right, a larger y is drawn higher (smaller SVG y).
        assert!(p[0].0 < p[1].0 && p[1].0 < p[2].0);
        assert!(p[0].1 > p[1].1 && p[1].1 > p[2].1);
    }

    #[test]
    fn bar_heights_are_proportional_to_values() {
        let chart = BarChart {
            title: "sweep".into(),
            y_label: "R@10".into(),
            categories: vec!["0.04".into(), "off".into()],
            groups: vec![("R@10".into(), vec![0.02, 0.04])],
        };
        let svg = chart.svg();
        let heights: Vec<f64> = svg
            .lines()
            .filter(|l| l.contains("<title>R@10"))
            .map(|l| {
                l.split("height=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(heights.len(), 2);
        assert!((heights[1] / heights[0] - 2.0).abs() < 0.02, "{heights:?}");
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.013, 0.087);
        assert!(t.len() >= 3 && t.len() <= 8, "{t:?}");
        assert!(t[0] >= 0.013 && *t.last().unwrap() <= 0.087);
        let step = t[1] - t[0];
        assert!(t.windows(2).all(|w| (w[1] - w[0] - step).abs() < 1e-12));
        assert_eq!(fmt_tick(0.02), "0.02");
        assert_eq!(fmt_tick(250.0), "250");
    }
}
