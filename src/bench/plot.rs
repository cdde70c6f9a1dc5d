//! The thesis' figures 12-14 for a bench grid, as PNG: latency against clients, throughput
//! against clients, and latency against throughput, one line per storage mode; and what a
//! value costs (frames, CPU) against clients.

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

/// Draws `lines` on log-scale axes.
fn draw(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    lines: &[Line],
) -> Result<(), BenchError> {
    let fail = fail(path);
    let all: Vec<(f64, f64)> = lines.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    if all.is_empty() {
        return Ok(());
    }
    let (x0, x1) = bounds(all.iter().map(|p| p.0));
    let (y0, y1) = bounds(all.iter().map(|p| p.1));
    let root = BitMapBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
        .map_err(|e| fail(e.to_string()))?;
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

/// A log axis' range holding every value, with some room.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    (lo / 1.5, hi * 1.5)
}

/// One figure: its file, title, axis descriptions and what it plots of each point.
pub struct Figure {
    pub file: &'static str,
    title: &'static str,
    axes: (&'static str, &'static str),
    xy: fn(&Point) -> (f64, f64),
}

/// The figures `draw_all` writes. Node processes run 10-20x below the in-process cluster, so
/// values/s is on a log axis too; every axis is.
pub const FIGURES: [Figure; 5] = [
    Figure {
        file: "latency-vs-clients.png",
        title: "Latency against clients (mean, submission to learning)",
        axes: ("clients", "latency (us)"),
        xy: |p| (p.clients as f64, p.latency_mean_us),
    },
    Figure {
        file: "throughput-vs-clients.png",
        title: "Throughput against clients",
        axes: ("clients", "values/s"),
        xy: |p| (p.clients as f64, p.values_per_sec),
    },
    Figure {
        file: "latency-vs-throughput.png",
        title: "Latency against throughput (mean)",
        axes: ("values/s", "latency (us)"),
        xy: |p| (p.values_per_sec, p.latency_mean_us),
    },
    Figure {
        file: "frames-per-value.png",
        title: "Frames sent per value (all nodes)",
        axes: ("clients", "frames per value"),
        xy: |p| (p.clients as f64, p.frames_per_value),
    },
    Figure {
        file: "cpu-per-value.png",
        title: "CPU per value (all node processes)",
        axes: ("clients", "CPU us per value"),
        xy: |p| (p.clients as f64, p.cpu_us_per_value),
    },
];

/// The figures, into `out`.
pub fn draw_all(out: &Path, points: &[Point]) -> Result<(), BenchError> {
    for f in &FIGURES {
        draw(&out.join(f.file), f.title, f.axes, &lines(points, f.xy))?;
    }
    Ok(())
}
