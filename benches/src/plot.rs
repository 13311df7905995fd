//! The recall@10-versus-QPS Pareto plot (PNG and SVG), one series per engine and index.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::Record;

/// Points of each series, Pareto-filtered (no point dominated in both recall and QPS) and
/// sorted by recall.
pub fn series(records: &[Record]) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in records {
        out.entry(format!("{} {}", r.engine, r.index))
            .or_default()
            .push((r.recall_at_10, r.qps_single));
    }
    for pts in out.values_mut() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut front: Vec<(f64, f64)> = Vec::new();
        for p in pts.iter().rev() {
            if front.last().is_none_or(|l| p.1 > l.1) {
                front.push(*p);
            }
        }
        front.reverse();
        *pts = front;
    }
    out
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    records: &[Record],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot: {x:?}");
    root.fill(&WHITE).map_err(e)?;
    let s = series(records);
    let all: Vec<(f64, f64)> = s.values().flatten().copied().collect();
    let xmin = all.iter().map(|p| p.0).fold(1.0, f64::min).min(0.9) - 0.01;
    // Whole decades, so the log axis always has labelled ticks.
    let lo = all
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .max(1e-3);
    let hi = all.iter().map(|p| p.1).fold(1e-3, f64::max);
    let ymin = 10f64.powf(lo.log10().floor());
    let ymax = 10f64.powf(hi.log10().ceil()).max(ymin * 10.0);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(xmin..1.0f64, (ymin..ymax).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("recall@10")
        .y_desc("queries/s (1 thread, log)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(e)?;
    for (i, (name, pts)) in s.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Write `<prefix>.png` and `<prefix>.svg`.
pub fn plot(records: &[Record], title: &str, prefix: &Path) -> Result<()> {
    if let Some(dir) = prefix.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let png = prefix.with_extension("png");
    let svg = prefix.with_extension("svg");
    draw(
        &BitMapBackend::new(&png, (900, 600)).into_drawing_area(),
        title,
        records,
    )?;
    draw(
        &SVGBackend::new(&svg, (900, 600)).into_drawing_area(),
        title,
        records,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(engine: &str, r: f64, q: f64) -> Record {
        serde_json::from_value(serde_json::json!({
            "schema": 1, "engine": engine, "index": "hnsw", "dataset": "d", "n": 1, "dim": 1,
            "metric": "l2", "nq": 1, "k": 10, "build_params": {}, "search_params": {},
            "threads": 1, "build_s": 0.0, "index_bytes": 0, "rss_bytes": 0, "recall_at_1": r,
            "recall_at_10": r, "recall_at_100": null, "qps_single": q, "qps_batch": q,
            "latency_ms": {"p50": 0.0, "p95": 0.0, "p99": 0.0}, "filter_selectivity": null,
            "machine": "m", "timestamp": 0
        }))
        .unwrap()
    }

    #[test]
    fn pareto_front_drops_dominated_points() {
        let s = series(&[
            rec("a", 0.9, 100.0),
            rec("a", 0.95, 50.0),
            rec("a", 0.93, 40.0),
            rec("b", 1.0, 5.0),
        ]);
        assert_eq!(s["a hnsw"], vec![(0.9, 100.0), (0.95, 50.0)]);
        assert_eq!(s["b hnsw"], vec![(1.0, 5.0)]);
    }
}
