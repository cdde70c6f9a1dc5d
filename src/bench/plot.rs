//! The thesis' figures 12-14 for a bench grid, as PNG: latency against clients, throughput
//! against clients, and latency against throughput, one line per storage mode.

use super::{BenchError, Point};
use plotters::prelude::*;
use std::path::Path;

/// Ten distinct colours (matplotlib's tab10): a line each, up to 10 lines.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One line of a plot: its label and (x, y) points.
type Line = (String, Vec<(f64, f64)>);

/// Lines of (x, y), one per mode, in the grid's order; only the points a log axis can show
/// (finite and positive) are kept.
fn lines(points: &[Point], xy: impl Fn(&Point) -> (f64, f64)) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    for p in points {
        let label = format!("{} ({})", p.mode(), p.transport);
        let k = match out.iter().position(|(l, _)| *l == label) {
            Some(k) => k,
            None => {
                out.push((label, Vec::new()));
                out.len() - 1
            }
        };
        let (x, y) = xy(p);
        if x.is_finite() && y.is_finite() && x > 0.0 && y > 0.0 {
            out[k].1.push((x, y));
        }
    }
    out
}

fn fail(path: &Path) -> impl Fn(String) -> BenchError + '_ {
    move |why| BenchError::Plot {
        path: path.to_path_buf(),
        why: if why.to_lowercase().contains("font") {
            format!("{why} (labels need a font: apt-get install fonts-dejavu-core)")
        } else {
            why
        },
    }
}

/// Draws `lines` with log-scale axes where asked.
fn draw(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    (x_log, y_log): (bool, bool),
    lines: &[Line],
) -> Result<(), BenchError> {
    let fail = fail(path);
    let all: Vec<(f64, f64)> = lines.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    if all.is_empty() {
        return Ok(());
    }
    let (x0, x1) = bounds(all.iter().map(|p| p.0), x_log);
    let (y0, y1) = bounds(all.iter().map(|p| p.1), y_log);
    let root = BitMapBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80);
    // Four axis kinds are four chart types; one macro body draws each.
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart.map_err(|e| fail(e.to_string()))?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_label_formatter(&|v| number(*v))
                .y_label_formatter(&|v| number(*v))
                .label_style(("sans-serif", 16))
                .draw()
                .map_err(|e| fail(e.to_string()))?;
            for (k, (label, v)) in lines.iter().enumerate() {
                let color = COLORS[k % COLORS.len()];
                chart
                    .draw_series(LineSeries::new(v.clone(), color.stroke_width(2)))
                    .map_err(|e| fail(e.to_string()))?
                    .label(label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(v.iter().map(|p| Circle::new(*p, 4, color.filled())))
                    .map_err(|e| fail(e.to_string()))?;
            }
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 16))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(|e| fail(e.to_string()))?;
        }};
    }
    match (x_log, y_log) {
        (true, true) => {
            finish!(builder.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale()))
        }
        (true, false) => finish!(builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1)),
        (false, true) => finish!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())),
        (false, false) => finish!(builder.build_cartesian_2d(x0..x1, y0..y1)),
    }
    root.present().map_err(|e| fail(e.to_string()))
}

/// 1.5M, 120k, 35, 0.5: short axis labels.
fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// An axis range holding every value, with some room (from 0 on a linear axis).
fn bounds(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if log {
        (lo / 1.5, hi * 1.5)
    } else {
        (0.0, hi * 1.1)
    }
}

/// The figures, into `out`. Node processes run 10-20x below the in-process cluster, so
/// values/s is on a log axis too.
pub fn draw_all(out: &Path, points: &[Point]) -> Result<(), BenchError> {
    draw(
        &out.join("latency-vs-clients.png"),
        "Latency against clients (mean, submission to learning)",
        ("clients", "latency (us)"),
        (true, true),
        &lines(points, |p| (p.clients as f64, p.latency_mean_us)),
    )?;
    draw(
        &out.join("throughput-vs-clients.png"),
        "Throughput against clients",
        ("clients", "values/s"),
        (true, true),
        &lines(points, |p| (p.clients as f64, p.values_per_sec)),
    )?;
    draw(
        &out.join("latency-vs-throughput.png"),
        "Latency against throughput (mean)",
        ("values/s", "latency (us)"),
        (true, true),
        &lines(points, |p| (p.values_per_sec, p.latency_mean_us)),
    )?;
    draw(
        &out.join("frames-per-value.png"),
        "Frames sent per value (all nodes)",
        ("clients", "frames per value"),
        (true, true),
        &lines(points, |p| (p.clients as f64, p.frames_per_value)),
    )?;
    draw(
        &out.join("cpu-per-value.png"),
        "CPU per value (all node processes)",
        ("clients", "CPU us per value"),
        (true, true),
        &lines(points, |p| (p.clients as f64, p.cpu_us_per_value)),
    )
}

/// The files `draw_all` writes.
pub const FILES: [&str; 5] = [
    "latency-vs-clients.png",
    "throughput-vs-clients.png",
    "latency-vs-throughput.png",
    "frames-per-value.png",
    "cpu-per-value.png",
];
