//! SVG charts of the results (plotters, SVG backend only; text is laid
//! out by plotters' own estimate, no fonts are loaded).
//!
//! - [`percentile_lines`]: a grid of panels, one per case; in each, one
//!   line per series: latency (x, µs, log scale) at each percentile (y):
//!   a latency distribution, read like a CDF.
//! - [`bars`]: a grid of panels, one per workload; in each, one horizontal
//!   bar per target (median over rounds) with a whisker over the rounds'
//!   range, the value written at the bar's end.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

/// One panel of [`percentile_lines`].
#[derive(Debug, Clone)]
pub struct LinePanel {
    /// The panel's caption.
    pub title: String,
    /// `(label, [percentile, µs] points)`.
    pub series: Vec<(String, Vec<[f64; 2]>)>,
}

/// One panel of [`bars`].
#[derive(Debug, Clone)]
pub struct BarPanel {
    /// The panel's caption (with the unit).
    pub title: String,
    /// `(label, median, [low, high])`, top to bottom.
    pub bars: Vec<(String, f64, [f64; 2])>,
}

const PANEL_W: u32 = 560;
const TITLE_H: u32 = 40;
const FONT: &str = "sans-serif";

/// Writes the panels' latency distributions to `path` (SVG).
pub fn percentile_lines(path: &Path, title: &str, panels: &[LinePanel]) -> Result<(), String> {
    let cols = panels.len().clamp(1, 2);
    let rows = panels.len().div_ceil(cols).max(1);
    let size = (PANEL_W * cols as u32, TITLE_H + 340 * rows as u32);
    write_svg(path, size, title, (rows, cols), |area, i| {
        panels.get(i).map_or(Ok(()), |p| line_panel(area, p))
    })
}

/// Writes the panels' bars to `path` (SVG).
pub fn bars(path: &Path, title: &str, panels: &[BarPanel]) -> Result<(), String> {
    let cols = panels.len().clamp(1, 2);
    let rows = panels.len().div_ceil(cols).max(1);
    let most = panels.iter().map(|p| p.bars.len()).max().unwrap_or(1) as u32;
    let size = (
        PANEL_W * cols as u32,
        TITLE_H + (70 + 28 * most) * rows as u32,
    );
    write_svg(path, size, title, (rows, cols), |area, i| {
        panels.get(i).map_or(Ok(()), |p| bar_panel(area, p))
    })
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Draws into an SVG string with a title and a grid, then writes it.
fn write_svg(
    path: &Path,
    size: (u32, u32),
    title: &str,
    grid: (usize, usize),
    mut draw: impl FnMut(&Area<'_>, usize) -> Result<(), String>,
) -> Result<(), String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(title, (FONT, 20)).map_err(err)?;
        for (i, area) in root.split_evenly(grid).iter().enumerate() {
            draw(area, i)?;
        }
        root.present().map_err(err)?;
    }
    std::fs::write(path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn err(e: impl std::fmt::Display) -> String {
    format!("chart: {e}")
}

fn line_panel(area: &Area<'_>, p: &LinePanel) -> Result<(), String> {
    let xs = p
        .series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|pt| pt[1]));
    let xs: Vec<f64> = xs.filter(|x| x.is_finite() && *x > 0.0).collect();
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if xs.is_empty() {
        (1.0, 10.0)
    } else {
        (lo * 0.8, hi * 1.25)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FONT, 15))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..100f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency, µs (log)")
        .y_desc("percentile")
        .x_labels(6)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 12))
        .draw()
        .map_err(err)?;
    for (i, (label, pts)) in p.series.iter().enumerate() {
        let color = Palette99::pick(i).mix(1.0);
        let line = pts
            .iter()
            .filter(|pt| pt[1].is_finite() && pt[1] > 0.0)
            .map(|pt| (pt[1], pt[0]));
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 11))
        .draw()
        .map_err(err)
}

fn bar_panel(area: &Area<'_>, p: &BarPanel) -> Result<(), String> {
    let n = p.bars.len().max(1);
    let top = p
        .bars
        .iter()
        .map(|b| b.2[1].max(b.1))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.3 } else { 1.0 };
    let labels: Vec<String> = p.bars.iter().map(|b| b.0.clone()).collect();
    let label_of = move |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => n
            .checked_sub(i + 1)
            .and_then(|j| labels.get(j))
            .cloned()
            .unwrap_or_default(),
        _ => String::new(),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FONT, 15))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(150)
        // Integer ranges include their end: 0..n-1 holds the n bars.
        .build_cartesian_2d(0f64..top, (0..n - 1).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&label_of)
        .x_labels(5)
        .x_label_formatter(&|v| short(*v))
        .label_style((FONT, 12))
        .draw()
        .map_err(err)?;
    for (i, (_, v, range)) in p.bars.iter().enumerate() {
        // Top to bottom: bar i sits in segment n - 1 - i.
        let seg = n - 1 - i;
        let upper = if seg + 1 < n {
            SegmentValue::Exact(seg + 1)
        } else {
            SegmentValue::Last
        };
        let color = Palette99::pick(i).mix(0.85);
        let v = if v.is_finite() { *v } else { 0.0 };
        let mut bar = Rectangle::new(
            [(0.0, SegmentValue::Exact(seg)), (v, upper)],
            color.filled(),
        );
        bar.set_margin(4, 4, 0, 0);
        chart.draw_series(std::iter::once(bar)).map_err(err)?;
        let mid = || SegmentValue::CenterOf(seg);
        if range.iter().all(|r| r.is_finite()) {
            let ends = vec![(range[0], mid()), (range[1], mid())];
            let whisker = PathElement::new(ends, BLACK.stroke_width(2));
            chart.draw_series(std::iter::once(whisker)).map_err(err)?;
        }
        let text = Text::new(
            format!(" {}", short(v)),
            (v.max(range[1]), mid()),
            (FONT, 11),
        );
        chart.draw_series(std::iter::once(text)).map_err(err)?;
    }
    Ok(())
}

/// `12.3k`, `950`, `1.2M`.
fn short(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e4 => format!("{:.0}k", v / 1e3),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_documents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines = dir.path().join("l.svg");
        let panel = LinePanel {
            title: "read qd1".into(),
            series: vec![("tcp".into(), vec![[50.0, 20.0], [99.0, 40.0]])],
        };
        percentile_lines(&lines, "t", &[panel.clone(), panel]).expect("lines");
        let b = dir.path().join("b.svg");
        let bp = BarPanel {
            title: "IOPS".into(),
            bars: vec![
                ("a".into(), 10.0, [9.0, 11.0]),
                ("b".into(), f64::NAN, [f64::NAN; 2]),
            ],
        };
        let one = BarPanel {
            title: "one bar".into(),
            bars: vec![("a".into(), 5.0, [5.0, 5.0])],
        };
        bars(&b, "t", &[bp, one]).expect("bars");
        for f in [lines, b] {
            let text = std::fs::read_to_string(&f).expect("read");
            assert!(
                text.contains("<svg") && text.trim_end().ends_with("</svg>"),
                "{text}"
            );
        }
        assert_eq!(short(12_345.0), "12k");
        assert_eq!(short(1_500.0), "1.5k");
    }
}
