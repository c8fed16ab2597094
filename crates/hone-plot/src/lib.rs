//! Training-curve plots rendered straight to PNG.
//!
//! Everything is drawn by hand into an RGB buffer — lines, axes, grid, a legend and text from a
//! built-in 5x7 bitmap font — and encoded with the pure-Rust `png` crate, so there are no system
//! dependencies (no fontconfig, no freetype).
//!
//! ```
//! use hone_plot::{render_charts, Chart, Series};
//!
//! let chart = Chart {
//!     title: "training loss".into(),
//!     x_label: "step".into(),
//!     y_label: "loss".into(),
//!     series: vec![Series { name: "loss".into(), points: vec![(0.0, 2.0), (10.0, 1.0)] }],
//! };
//! let png = render_charts(&[chart], 640, 320);
//! assert_eq!(&png[1..4], b"PNG");
//! ```

mod canvas;
mod chart;
mod font;
mod metrics;
mod ticks;

use std::path::Path;

use canvas::Canvas;
use chart::{draw_chart, BACKGROUND, SEPARATOR};

pub use chart::series_color;
pub use metrics::plot_metrics_jsonl;
pub use ticks::{format_tick, nice_ticks};

/// One named line on a chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub name: String,
    /// `(x, y)` pairs, drawn in order. Non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

/// One panel: a titled pair of axes holding any number of series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

const MAX_DIM: u32 = 1 << 15;

/// Renders `charts` stacked vertically, each `width` x `height_per_chart` pixels, and returns the
/// PNG file bytes (8-bit RGB). An empty slice renders a single "no data" panel. Dimensions are
/// clamped to `1..=32768`.
pub fn render_charts(charts: &[Chart], width: u32, height_per_chart: u32) -> Vec<u8> {
    let width = width.clamp(1, MAX_DIM);
    let panel_h = height_per_chart.clamp(1, MAX_DIM);
    let panels = charts.len().max(1);
    let max_panels = (MAX_DIM / panel_h).max(1) as usize;
    let panels = panels.min(max_panels);
    let height = panel_h * panels as u32;

    let mut canvas = Canvas::new(width, height, BACKGROUND);
    if charts.is_empty() {
        draw_chart(&mut canvas, &Chart::default(), 0, panel_h);
    } else {
        for (i, chart) in charts.iter().take(panels).enumerate() {
            let top = i as i64 * panel_h as i64;
            if i > 0 {
                canvas.hline(0, width as i64 - 1, top, SEPARATOR);
            }
            draw_chart(&mut canvas, chart, top, panel_h);
        }
    }
    canvas.encode_png()
}

/// [`render_charts`] written to `path`.
pub fn save_png(
    path: impl AsRef<Path>,
    charts: &[Chart],
    width: u32,
    height_per_chart: u32,
) -> std::io::Result<()> {
    std::fs::write(path, render_charts(charts, width, height_per_chart))
}
