//! The pictures a run leaves behind, as SVG files (plotters): loss curves,
//! tokens kept per layer, and the accuracy-versus-work trade-off of a sweep.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};

fn err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("drawing `{}`: {e}", path.display()))
}

/// Renders into a string first, then writes atomically.
fn draw_svg(path: &Path, size: (u32, u32), draw: impl FnOnce(DrawingArea<SVGBackend, plotters::coord::Shift>) -> std::result::Result<(), Box<dyn std::error::Error>>) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(path, e))?;
        draw(root.clone()).map_err(|e| err(path, e))?;
        root.present().map_err(|e| err(path, e))?;
    }
    crate::io::write_atomic(path, svg.as_bytes())
}

fn range(vals: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let lo = vals.clone().fold(f64::INFINITY, f64::min);
    let hi = vals.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad, hi + pad)
}

/// Named series of (x, y) points as lines, e.g. loss against step.
pub fn lines(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
    let ys = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1));
    let ((x0, x1), (y0, y1)) = (range(xs.clone()), range(ys.clone()));
    draw_svg(path, (800, 480), |root| {
        let mut chart = ChartBuilder::on(&root).caption(title, ("sans-serif", 20)).margin(12).x_label_area_size(40).y_label_area_size(60).build_cartesian_2d(x0..x1, y0..y1)?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw()?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?.label(name.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        Ok(())
    })
}

/// Points with labels, e.g. a sweep's (relative work, accuracy), with an
/// optional horizontal reference line (the unpruned model).
pub fn tradeoff(path: &Path, title: &str, x_label: &str, y_label: &str, points: &[(f64, f64, String)], reference: Option<(f64, &str)>) -> Result<()> {
    let xs = points.iter().map(|p| p.0).chain([0.0, 1.0]);
    let ys = points.iter().map(|p| p.1).chain(reference.map(|r| r.0));
    let ((x0, x1), (y0, y1)) = (range(xs), range(ys));
    let mut sorted: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.1)).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    draw_svg(path, (800, 520), |root| {
        let mut chart = ChartBuilder::on(&root).caption(title, ("sans-serif", 20)).margin(12).x_label_area_size(40).y_label_area_size(60).build_cartesian_2d(x0..x1, y0..y1)?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw()?;
        if let Some((y, name)) = reference {
            chart.draw_series(LineSeries::new([(x0, y), (x1, y)], BLACK.mix(0.5).stroke_width(1)))?.label(name.to_string()).legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.5)));
        }
        chart.draw_series(LineSeries::new(sorted, BLUE.stroke_width(2)))?;
        chart.draw_series(points.iter().map(|(x, y, l)| {
            EmptyElement::at((*x, *y)) + Circle::new((0, 0), 4, BLUE.filled()) + Text::new(l.clone(), (6, -14), ("sans-serif", 13))
        }))?;
        chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        Ok(())
    })
}

/// One curve of a frontier picture: (relative FLOPs, secure bytes ratio,
/// metric) per point.
pub struct Curve {
    pub name: String,
    pub points: Vec<(f64, f64, f64)>,
    /// The single runs behind points that are means over seeds, drawn as
    /// hollow markers in the curve's colour (empty: none).
    pub runs: Vec<(f64, f64, f64)>,
}

/// The accuracy–cost frontier as two panels side by side: the metric
/// against relative FLOPs and against the protocol's online bytes, one
/// line with markers per curve, and the unpruned reference.
pub fn frontier(path: &Path, title: &str, y_label: &str, curves: &[Curve], reference: Option<(f64, &str)>) -> Result<()> {
    let ys = curves.iter().flat_map(|c| c.points.iter().chain(&c.runs).map(|p| p.2)).chain(reference.map(|r| r.0));
    let (y0, y1) = range(ys);
    draw_svg(path, (1200, 520), |root| {
        let root = root.titled(title, ("sans-serif", 20))?;
        let panels = root.split_evenly((1, 2));
        for (k, panel) in panels.iter().enumerate() {
            let x_of = |p: &(f64, f64, f64)| if k == 0 { p.0 } else { p.1 };
            let (x0, x1) = range(curves.iter().flat_map(|c| c.points.iter().chain(&c.runs).map(x_of)).chain([1.0]));
            let x_label = if k == 0 { "relative FLOPs (attention at tokens entering, FFN at tokens kept)" } else { "two-party online bytes / unpruned" };
            let mut chart = ChartBuilder::on(panel).margin(12).x_label_area_size(40).y_label_area_size(60).build_cartesian_2d(x0..x1, y0..y1)?;
            chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw()?;
            if let Some((y, name)) = reference {
                chart.draw_series(LineSeries::new([(x0, y), (x1, y)], BLACK.mix(0.5).stroke_width(1)))?.label(name.to_string()).legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.5)));
            }
            for (i, c) in curves.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let mut pts: Vec<(f64, f64)> = c.points.iter().map(|p| (x_of(p), p.2)).collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?.label(c.name.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                chart.draw_series(pts.into_iter().map(|(x, y)| Circle::new((x, y), 4, color.filled())))?;
                chart.draw_series(c.runs.iter().map(|p| Circle::new((x_of(p), p.2), 3, color.stroke_width(1))))?;
            }
            chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        }
        Ok(())
    })
}

/// Bars of mean tokens entering each layer, e.g. a pruned run's schedule.
pub fn tokens_per_layer(path: &Path, title: &str, entering: &[f64], real_tokens: f64) -> Result<()> {
    let top = real_tokens.max(entering.iter().copied().fold(0.0, f64::max)) * 1.1;
    let n = entering.len();
    draw_svg(path, (640, 420), |root| {
        let mut chart = ChartBuilder::on(&root).caption(title, ("sans-serif", 18)).margin(12).x_label_area_size(40).y_label_area_size(50).build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..top.max(1.0))?;
        chart.configure_mesh().x_desc("layer").y_desc("tokens entering (mean)").x_labels(n).x_label_formatter(&|x| format!("{:.0}", x)).draw()?;
        chart.draw_series(entering.iter().enumerate().map(|(l, &v)| Rectangle::new([(l as f64 - 0.35, 0.0), (l as f64 + 0.35, v)], BLUE.mix(0.7).filled())))?;
        chart.draw_series(LineSeries::new([(-0.5, real_tokens), (n as f64 - 0.5, real_tokens)], RED.stroke_width(1)))?.label("real tokens (unpruned)").legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED));
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        Ok(())
    })
}

/// (step, value) pairs of `key` from a metrics.jsonl, for lines of `kind`,
/// sorted by step; a resumed run logs some steps twice, the last one counts.
pub fn series_from_metrics(path: &Path, kind: &str, key: &str) -> Result<Vec<(f64, f64)>> {
    let text = crate::io::read_to_string(path)?;
    let mut by_step = std::collections::BTreeMap::new();
    for v in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter(|v| v["kind"] == kind) {
        if let (Some(step), Some(y)) = (v["step"].as_u64(), v[key].as_f64()) {
            by_step.insert(step, y);
        }
    }
    Ok(by_step.into_iter().map(|(s, y)| (s as f64, y)).collect())
}
