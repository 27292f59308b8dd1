//! What the growth-curve examples share: one fresh process per size, the process's resident memory and a
//! log-log figure.

/// The process's resident set (`VmRSS`) or its peak (`VmHWM`), in MiB.
pub fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// One SVG figure: a line per series of `(x, value)` points, both axes logarithmic.
pub fn log_log_figure(
    path: &std::path::Path,
    x_desc: &str,
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    // Text is measured and drawn with an embedded face (plotters' ab_glyph backend has no system fonts).
    plotters::style::register_font(
        "sans-serif",
        plotters::style::FontStyle::Normal,
        epaint_default_fonts::UBUNTU_LIGHT,
    )
    .map_err(|_| "the embedded chart font could not be read")?;
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (x_min, x_max, y_min, y_max) = points.fold(
        (f64::MAX, 1.0f64, f64::MAX, 0.0f64),
        |(xl, x, lo, hi), &(px, py)| (xl.min(px), x.max(px), lo.min(py), hi.max(py)),
    );
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (x_min / 2.0..x_max * 2.0).log_scale(),
            ((y_min / 2.0).max(1e-3)..y_max * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0e}"))
        .draw()?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

/// In a `--child` run: prints the size's record as JSON on stdout for the parent.
pub fn print_record<T: serde::Serialize>(record: &T) {
    println!("{}", serde_json::to_string(record).expect("record as JSON"));
}

/// Measures one size in a fresh process (so one size's freed memory does not hide the next one's growth): this
/// program again with `--child` and `args`, its stderr passed through. `None` (with a message naming `what`)
/// when the child fails, for instance killed for memory.
pub fn measure_in_child<T: serde::de::DeserializeOwned>(args: &[String], what: &str) -> Option<T> {
    let exe = std::env::current_exe().expect("this program's path");
    let out = std::process::Command::new(exe)
        .arg("--child")
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run one size");
    if !out.status.success() {
        eprintln!("[{what}] failed ({})", out.status);
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("a record"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_log_figure_draws_each_series_with_its_legend() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fig.svg");
        let series = vec![
            ("beam 20".to_string(), vec![(1e3, 2.0), (1e4, 5.0)]),
            ("beam 50".to_string(), vec![(1e3, 4.0), (1e4, 9.0)]),
        ];
        super::log_log_figure(&path, "items", "latency", "ms", &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for name in ["beam 20", "beam 50", "latency"] {
            assert!(svg.contains(name), "{name} missing from the figure");
        }
    }
}
