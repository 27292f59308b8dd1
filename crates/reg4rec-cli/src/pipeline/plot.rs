//! The report's two kinds of chart, drawn with `plotters`: a line chart (training curves) and a grouped bar
//! chart (the CORP sweep, codebook utilisation). Each renders to an SVG document and a PNG image of the same
//! drawing. Text uses the Ubuntu Light face embedded by `epaint_default_fonts` (registered with plotters as
//! `sans-serif` on first use), so the PNGs need no system fonts.

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::sync::OnceLock;

const WIDTH: u32 = 760;
const HEIGHT: u32 = 440;
/// Width of the legend column right of the plot.
const LEGEND: u32 = 200;
const FONT: &str = "sans-serif";
/// Colour-blind-safe palette (Okabe-Ito), cycled.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0x00, 0x00, 0x00),
    RGBColor(0xF0, 0xE4, 0x42),
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

/// One chart in both formats.
pub struct Rendered {
    pub svg: String,
    /// A PNG file's bytes, `WIDTH x HEIGHT` RGB.
    pub png: Vec<u8>,
}

/// A chart that can draw itself on any plotters backend.
pub trait Chart {
    /// Draws the whole chart on `root` (already filled white).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;

    /// The chart as SVG and as PNG.
    fn render(&self) -> Result<Rendered> {
        register_font()?;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
            root.fill(&WHITE).map_err(drawing)?;
            self.draw(&root)?;
            root.present().map_err(drawing)?;
        }
        let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(drawing)?;
        }
        let mut png = Vec::new();
        let mut encoder = png::Encoder::new(&mut png, WIDTH, HEIGHT);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().context("encoding a PNG chart")?;
        writer
            .write_image_data(&pixels)
            .context("encoding a PNG chart")?;
        writer.finish().context("encoding a PNG chart")?;
        Ok(Rendered { svg, png })
    }
}

/// Registers the embedded face as plotters' `sans-serif` once per process.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .is_ok()
    });
    ok.then_some(())
        .ok_or_else(|| anyhow!("the embedded chart font could not be read"))
}

fn drawing<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
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

/// Tick labels: integers without decimals, small rates with up to four, extremes in scientific notation.
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

/// Splits `root` into the plot (left) and the legend column (right), drawing the legend: one entry per name,
/// a line sample for curves, a filled square for bars.
fn with_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    names: &[String],
    bars: bool,
) -> Result<DrawingArea<DB, Shift>> {
    let (plot, legend) = root.split_horizontally(WIDTH - LEGEND);
    let style = (FONT, 13).into_font().color(&BLACK);
    for (i, name) in names.iter().enumerate() {
        let (x, y) = (8, 52 + 20 * i as i32);
        let colour = PALETTE[i % PALETTE.len()];
        if bars {
            legend
                .draw(&Rectangle::new(
                    [(x, y - 5), (x + 14, y + 5)],
                    colour.filled(),
                ))
                .map_err(drawing)?;
        } else {
            legend
                .draw(&PathElement::new(
                    vec![(x, y), (x + 16, y)],
                    colour.stroke_width(3),
                ))
                .map_err(drawing)?;
        }
        legend
            .draw(&Text::new(name.as_str(), (x + 22, y - 7), style.clone()))
            .map_err(drawing)?;
    }
    Ok(plot)
}

impl LineChart {
    /// The series with at least one finite point, those points only.
    fn finite_series(&self) -> Vec<(&str, Vec<(f64, f64)>)> {
        self.series
            .iter()
            .map(|s| {
                let points = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect::<Vec<_>>();
                (s.name.as_str(), points)
            })
            .filter(|(_, p)| !p.is_empty())
            .collect()
    }
}

impl Chart for LineChart {
    /// Series without a finite point are left out; with none at all the plot says "no data". Curves of at most
    /// 40 points get a marker on every point, so a curve of one or two epochs stays visible.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let series = self.finite_series();
        let names: Vec<String> = series.iter().map(|(n, _)| n.to_string()).collect();
        let plot = with_legend(root, &names, false)?;
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in series.iter().flat_map(|(_, p)| p.iter()) {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if series.is_empty() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        let (x0, x1) = padded(x0, x1);
        let (y0, y1) = padded(y0, y1);
        let (y0, y1) = (y0 - 0.04 * (y1 - y0), y1 + 0.04 * (y1 - y0));
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(drawing)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&|v| fmt_tick(*v))
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(drawing)?;
        if series.is_empty() {
            chart
                .draw_series(std::iter::once(Text::new(
                    "no data",
                    (0.45, 0.5),
                    (FONT, 16).into_font().color(&RGBColor(0x88, 0x88, 0x88)),
                )))
                .map_err(drawing)?;
        }
        for (k, (_, points)) in series.iter().enumerate() {
            let colour = PALETTE[k % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(drawing)?;
            if points.len() <= 40 {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                    .map_err(drawing)?;
            }
        }
        Ok(())
    }
}

impl Chart for BarChart {
    /// The y axis starts at 0 (values are rates and metrics); non-finite values draw no bar.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let names: Vec<String> = self.groups.iter().map(|(n, _)| n.clone()).collect();
        let plot = with_legend(root, &names, true)?;
        let max = self
            .groups
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let y1 = if max > 0.0 { max * 1.08 } else { 1.0 };
        let n_cat = self.categories.len().max(1) as u32;
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, (FONT, 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            // An integer range includes its end: one segment per category.
            .build_cartesian_2d((0..n_cat - 1).into_segmented(), 0.0..y1)
            .map_err(drawing)?;
        let categories = &self.categories;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_labels(categories.len().max(1))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(c) => {
                    categories.get(*c as usize).cloned().unwrap_or_default()
                }
                _ => String::new(),
            })
            .y_label_formatter(&|v| fmt_tick(*v))
            .y_desc(&self.y_label)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(drawing)?;
        // Each category's slot holds its groups side by side over the middle 80%.
        let n_groups = self.groups.len().max(1) as f64;
        let mut bars = Vec::new();
        for c in 0..self.categories.len() as u32 {
            let (left, base) = chart.backend_coord(&(SegmentValue::Exact(c), 0.0));
            let (centre, _) = chart.backend_coord(&(SegmentValue::CenterOf(c), 0.0));
            let slot = 2.0 * f64::from(centre - left);
            let width = slot * 0.8 / n_groups;
            for (g, (_, values)) in self.groups.iter().enumerate() {
                let Some(&v) = values.get(c as usize).filter(|v| v.is_finite()) else {
                    continue;
                };
                let (_, top) = chart.backend_coord(&(SegmentValue::Exact(c), v.max(0.0)));
                let x = f64::from(left) + slot * 0.1 + width * g as f64;
                bars.push(Rectangle::new(
                    [(x.round() as i32, top), ((x + width).round() as i32, base)],
                    PALETTE[g % PALETTE.len()].filled(),
                ));
            }
        }
        for bar in &bars {
            root.draw(bar).map_err(drawing)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `points` of every `<polyline>` of an SVG, in document order.
    fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.split("<polyline")
            .skip(1)
            .filter_map(|el| el.split("points=\"").nth(1))
            .map(|rest| {
                rest.split('"')
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    /// The contents of every `<text>` element of an SVG, trimmed.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|el| el.split_once('>'))
            .map(|(_, rest)| rest.split("</text>").next().unwrap().trim().to_string())
            .collect()
    }

    /// The `<rect>` elements of an SVG filled with `colour` (`#RRGGBB`), as `(x, y, width, height)`.
    fn rects(svg: &str, colour: &str) -> Vec<(f64, f64, f64, f64)> {
        let attr = |el: &str, name: &str| -> f64 {
            el.split(&format!(" {name}=\""))
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        svg.split("<rect")
            .skip(1)
            .map(|el| el.split('>').next().unwrap())
            .filter(|el| el.to_uppercase().contains(&format!("FILL=\"{colour}\"")))
            .map(|el| {
                (
                    attr(el, "x"),
                    attr(el, "y"),
                    attr(el, "width"),
                    attr(el, "height"),
                )
            })
            .collect()
    }

    /// Decodes a PNG into `(width, height, RGB bytes)`.
    fn decode(png: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        assert_eq!(info.color_type, png::ColorType::Rgb);
        (info.width, info.height, buf)
    }

    fn rising() -> LineChart {
        LineChart {
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
        }
    }

    #[test]
    fn line_chart_draws_its_points_in_order_inside_the_plot_in_both_formats() {
        let out = rising().render().unwrap();
        let svg = &out.svg;
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let texts = texts(svg);
        assert!(
            texts.iter().any(|t| t == "loss &lt;a &amp; b&gt;"),
            "the title is escaped: {texts:?}"
        );
        assert!(
            texts.iter().any(|t| t == "rising"),
            "the legend names the series"
        );
        assert!(
            !svg.contains("nan only"),
            "a series without finite points is left out"
        );
        // The series' polyline (the axes are drawn as polylines too): the one with three points.
        let lines: Vec<_> = polylines(svg)
            .into_iter()
            .filter(|p| p.len() == 3)
            .collect();
        assert_eq!(lines.len(), 1, "{svg}");
        let p = &lines[0];
        for &(x, y) in p {
            assert!(
                (0.0..f64::from(WIDTH - LEGEND)).contains(&x),
                "x {x} outside the plot"
            );
            assert!((0.0..f64::from(HEIGHT)).contains(&y), "y {y} outside");
        }
        // x increases left to right, a larger y is drawn higher (a smaller SVG y).
        assert!(p[0].0 < p[1].0 && p[1].0 < p[2].0);
        assert!(p[0].1 > p[1].1 && p[1].1 > p[2].1);

        let (w, h, pixels) = decode(&out.png);
        assert_eq!((w, h), (WIDTH, HEIGHT));
        let at = |x: f64, y: f64| {
            let i = (y.round() as usize * w as usize + x.round() as usize) * 3;
            [pixels[i], pixels[i + 1], pixels[i + 2]]
        };
        // The PNG is the same drawing: the curve's colour at the SVG's vertices.
        let RGBColor(r, g, b) = PALETTE[0];
        for &(x, y) in p {
            assert_eq!(at(x, y), [r, g, b], "PNG pixel at the vertex ({x}, {y})");
        }
        // Text was rasterised: the title row (top 30 pixels) has dark pixels.
        let dark = pixels[..30 * w as usize * 3]
            .chunks(3)
            .filter(|px| px.iter().all(|&c| c < 100))
            .count();
        assert!(dark > 20, "no title glyphs in the PNG ({dark} dark pixels)");
    }

    #[test]
    fn a_chart_without_data_says_so() {
        let chart = LineChart {
            series: vec![],
            ..rising()
        };
        let svg = chart.render().unwrap().svg;
        assert!(texts(&svg).iter().any(|t| t == "no data"));
    }

    #[test]
    fn bar_heights_are_proportional_to_values_and_start_at_zero() {
        let chart = BarChart {
            title: "sweep".into(),
            y_label: "R@10".into(),
            categories: vec!["0.04".into(), "off".into(), "nan".into()],
            groups: vec![
                ("R@10".into(), vec![0.02, 0.04, f64::NAN]),
                ("N@10".into(), vec![0.01, 0.03, 0.0]),
            ],
        };
        let out = chart.render().unwrap();
        let RGBColor(r, g, b) = PALETTE[0];
        let first = rects(&out.svg, &format!("#{r:02X}{g:02X}{b:02X}"));
        // Two bars (the NaN draws none) and the legend's square.
        let bars: Vec<_> = first.iter().filter(|r| r.2 > 14.0).collect();
        assert_eq!(bars.len(), 2, "{first:?}");
        let (a, b) = (bars[0], bars[1]);
        assert!(
            (b.3 / a.3 - 2.0).abs() < 0.05,
            "heights {} and {}",
            a.3,
            b.3
        );
        assert!(
            (a.1 + a.3 - (b.1 + b.3)).abs() < 1.0,
            "bars share the zero line"
        );
        assert!(a.0 < b.0, "categories left to right");
        assert!(
            texts(&out.svg).iter().any(|t| t == "off"),
            "category labels are drawn"
        );
    }

    #[test]
    fn ticks_read_as_numbers() {
        assert_eq!(fmt_tick(0.02), "0.02");
        assert_eq!(fmt_tick(250.0), "250");
        assert_eq!(fmt_tick(0.0), "0");
        assert_eq!(fmt_tick(2e-5), "2.0e-5");
    }
}
