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

mod font;

use std::collections::BTreeMap;
use std::path::Path;

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

type Rgb = [u8; 3];

const BACKGROUND: Rgb = [255, 255, 255];
const GRID: Rgb = [226, 226, 226];
const AXIS: Rgb = [40, 40, 40];
const TEXT: Rgb = [20, 20, 20];
const MUTED: Rgb = [130, 130, 130];
const SEPARATOR: Rgb = [200, 200, 200];

/// Matplotlib's "tab10" palette.
const PALETTE: [Rgb; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// The colour used for the `index`-th series of a chart (cycles after ten).
pub fn series_color(index: usize) -> [u8; 3] {
    PALETTE[index % PALETTE.len()]
}

// ---------------------------------------------------------------------------------------------
// Ticks
// ---------------------------------------------------------------------------------------------

/// Evenly spaced "nice" tick values (steps of 1, 2 or 5 times a power of ten) covering
/// `[min, max]`, with about `target` intervals (at least one).
///
/// The first tick is `<= min` and the last `>= max`. A degenerate range (`min == max`) is widened
/// around the value; non-finite bounds fall back to `0..1`; swapped bounds are reordered.
pub fn nice_ticks(min: f64, max: f64, target: usize) -> Vec<f64> {
    TickSet::new(min, max, target).values
}

/// Formats a tick value for an axis whose ticks are `step` apart: just enough decimals to tell
/// neighbouring ticks apart, and scientific notation (`5e-4`, `1.5e-5`, `2e6`) for very small or
/// very large steps.
pub fn format_tick(value: f64, step: f64) -> String {
    if !value.is_finite() {
        return format!("{value}");
    }
    let exp = if step.is_finite() && step > 0.0 {
        (step.log10() + 1e-9).floor() as i32
    } else {
        0
    };
    format_with_exp(value, step.abs(), exp)
}

fn format_with_exp(value: f64, step: f64, exp: i32) -> String {
    // Snap values that are zero up to rounding error, so we never print "-0" or "1e-17".
    let value = if value == 0.0 || (step > 0.0 && value.abs() < step * 1e-6) {
        0.0
    } else {
        value
    };
    if exp <= -4 || exp >= 6 {
        if value == 0.0 {
            return "0".to_string();
        }
        // Scientific: as many mantissa digits as the step needs.
        let value_exp = format!("{value:e}")
            .split('e')
            .nth(1)
            .and_then(|e| e.parse::<i32>().ok())
            .unwrap_or(exp);
        let digits = (value_exp - exp).clamp(0, 15) as usize;
        let s = format!("{value:.digits$e}");
        match s.split_once('e') {
            Some((mantissa, e)) => {
                let mantissa = if mantissa.contains('.') {
                    mantissa.trim_end_matches('0').trim_end_matches('.')
                } else {
                    mantissa
                };
                format!("{mantissa}e{e}")
            }
            None => s,
        }
    } else {
        let decimals = (-exp).max(0) as usize;
        format!("{value:.decimals$}")
    }
}

#[derive(Debug, Clone)]
struct TickSet {
    values: Vec<f64>,
    step: f64,
    /// `step == nice * 10^exp` with `nice` in {1, 2, 5}.
    exp: i32,
}

impl TickSet {
    fn new(min: f64, max: f64, target: usize) -> Self {
        let (mut lo, mut hi) = if min.is_finite() && max.is_finite() {
            (min.min(max), min.max(max))
        } else if min.is_finite() {
            (min, min)
        } else if max.is_finite() {
            (max, max)
        } else {
            (0.0, 1.0)
        };
        if hi - lo <= hi.abs().max(lo.abs()) * 1e-12 || !(hi - lo).is_finite() {
            // Degenerate (single value / constant series): widen around the value.
            let centre = if (hi - lo).is_finite() {
                0.5 * (lo + hi)
            } else {
                0.0
            };
            if centre == 0.0 {
                lo = -1.0;
                hi = 1.0;
            } else {
                let half = (centre.abs() * 0.1).max(f64::MIN_POSITIVE);
                lo = centre - half;
                hi = centre + half;
            }
            if !(hi - lo).is_finite() || hi - lo <= 0.0 {
                lo = 0.0;
                hi = 1.0;
            }
        }
        let target = target.max(1) as f64;
        let raw = (hi - lo) / target;
        let mut exp = raw.log10().floor() as i32;
        let mag = pow10(exp);
        let norm = raw / mag;
        let nice = if norm <= 1.0 + 1e-9 {
            1
        } else if norm <= 2.0 + 1e-9 {
            2
        } else if norm <= 5.0 + 1e-9 {
            5
        } else {
            exp += 1;
            1
        };
        let step = nice as f64 * pow10(exp);
        // Tick k sits at k * nice * 10^exp; computing it that way (rather than accumulating
        // steps) keeps 0.6 as 0.6 instead of 0.6000000000000001.
        let value = |k: i64| {
            let m = k.saturating_mul(nice) as f64;
            if exp < 0 {
                m / pow10(-exp)
            } else {
                m * pow10(exp)
            }
        };
        let first = ((lo / step) + 1e-9).floor() as i64;
        let last = ((hi / step) - 1e-9).ceil() as i64;
        let last = last.max(first.saturating_add(1));
        // Guard against absurd tick counts from pathological input.
        let last = last.min(first.saturating_add(1000));
        let values = (first..=last).map(value).collect();
        TickSet { values, step, exp }
    }

    fn lo(&self) -> f64 {
        self.values[0]
    }

    fn hi(&self) -> f64 {
        self.values[self.values.len() - 1]
    }

    fn labels(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|&v| format_with_exp(v, self.step, self.exp))
            .collect()
    }
}

fn pow10(exp: i32) -> f64 {
    10f64.powi(exp)
}

// ---------------------------------------------------------------------------------------------
// Canvas
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Rect {
    x0: i64,
    y0: i64,
    /// Inclusive.
    x1: i64,
    /// Inclusive.
    y1: i64,
}

impl Rect {
    fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.x0 && x <= self.x1 && y >= self.y0 && y <= self.y1
    }
}

struct Canvas {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        let data = BACKGROUND.repeat(width as usize * height as usize);
        Canvas {
            width,
            height,
            data,
        }
    }

    fn index(&self, x: i64, y: i64) -> Option<usize> {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            None
        } else {
            Some((y as usize * self.width as usize + x as usize) * 3)
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if let Some(i) = self.index(x, y) {
            self.data[i..i + 3].copy_from_slice(&c);
        }
    }

    fn get(&self, x: i64, y: i64) -> Option<Rgb> {
        self.index(x, y)
            .map(|i| [self.data[i], self.data[i + 1], self.data[i + 2]])
    }

    fn fill_rect(&mut self, r: Rect, c: Rgb) {
        let x0 = r.x0.max(0);
        let y0 = r.y0.max(0);
        let x1 = r.x1.min(self.width as i64 - 1);
        let y1 = r.y1.min(self.height as i64 - 1);
        for y in y0..=y1 {
            for x in x0..=x1 {
                self.set(x, y, c);
            }
        }
    }

    fn hline(&mut self, x0: i64, x1: i64, y: i64, c: Rgb) {
        self.fill_rect(
            Rect {
                x0: x0.min(x1),
                y0: y,
                x1: x0.max(x1),
                y1: y,
            },
            c,
        );
    }

    fn vline(&mut self, x: i64, y0: i64, y1: i64, c: Rgb) {
        self.fill_rect(
            Rect {
                x0: x,
                y0: y0.min(y1),
                x1: x,
                y1: y0.max(y1),
            },
            c,
        );
    }

    fn stroke_rect(&mut self, r: Rect, c: Rgb) {
        self.hline(r.x0, r.x1, r.y0, c);
        self.hline(r.x0, r.x1, r.y1, c);
        self.vline(r.x0, r.y0, r.y1, c);
        self.vline(r.x1, r.y0, r.y1, c);
    }

    /// A `thickness`-pixel line from `a` to `b`, drawn only inside `clip`.
    fn line(&mut self, a: (i64, i64), b: (i64, i64), thickness: i64, c: Rgb, clip: Rect) {
        let (mut x, mut y) = a;
        let dx = (b.0 - a.0).abs();
        let dy = -(b.1 - a.1).abs();
        let sx = if a.0 < b.0 { 1 } else { -1 };
        let sy = if a.1 < b.1 { 1 } else { -1 };
        let mut err = dx + dy;
        let off = (thickness - 1) / 2;
        loop {
            for oy in 0..thickness {
                for ox in 0..thickness {
                    let (px, py) = (x + ox - off, y + oy - off);
                    if clip.contains(px, py) {
                        self.set(px, py, c);
                    }
                }
            }
            if x == b.0 && y == b.1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Horizontal text with its top-left corner at `(x, y)`.
    fn text(&mut self, x: i64, y: i64, text: &str, scale: u32, c: Rgb) {
        let s = scale.max(1) as i64;
        for (i, ch) in text.chars().enumerate() {
            let cx = x + i as i64 * font::ADVANCE as i64 * s;
            for col in 0..font::GLYPH_W {
                for row in 0..font::GLYPH_ROWS {
                    if font::pixel(ch, col, row) {
                        let px = cx + col as i64 * s;
                        let py = y + row as i64 * s;
                        self.fill_rect(
                            Rect {
                                x0: px,
                                y0: py,
                                x1: px + s - 1,
                                y1: py + s - 1,
                            },
                            c,
                        );
                    }
                }
            }
        }
    }

    /// Text rotated 90° anticlockwise (reading bottom to top); `(x, y)` is the bottom-left corner
    /// of the rotated text's bounding box.
    fn text_vertical(&mut self, x: i64, y: i64, text: &str, scale: u32, c: Rgb) {
        let s = scale.max(1) as i64;
        for (i, ch) in text.chars().enumerate() {
            let along = i as i64 * font::ADVANCE as i64 * s;
            for col in 0..font::GLYPH_W {
                for row in 0..font::GLYPH_ROWS {
                    if font::pixel(ch, col, row) {
                        let px = x + row as i64 * s;
                        let py = y - along - col as i64 * s - (s - 1);
                        self.fill_rect(
                            Rect {
                                x0: px,
                                y0: py,
                                x1: px + s - 1,
                                y1: py + s - 1,
                            },
                            c,
                        );
                    }
                }
            }
        }
    }
}

fn text_w(text: &str, scale: u32) -> i64 {
    font::text_width(text) as i64 * scale as i64
}

fn text_h(scale: u32) -> i64 {
    font::GLYPH_H as i64 * scale as i64
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

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

    let mut canvas = Canvas::new(width, height);
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
    encode_png(&canvas)
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

fn encode_png(canvas: &Canvas) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, canvas.width, canvas.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        // Dimensions are clamped to valid, non-zero values and the buffer matches them exactly,
        // and writing into a Vec cannot fail, so encoding cannot fail.
        let mut writer = encoder
            .write_header()
            .expect("PNG header for valid dimensions");
        writer
            .write_image_data(&canvas.data)
            .expect("PNG data matching the header");
        writer.finish().expect("PNG finish into memory");
    }
    out
}

/// Sizes of the text elements, picked from the panel size.
struct Style {
    title: u32,
    label: u32,
    tick: u32,
    legend: u32,
    line: i64,
}

impl Style {
    fn for_size(width: u32, height: u32) -> Self {
        let big = width >= 600 && height >= 260;
        Style {
            title: if big { 2 } else { 1 },
            label: 1,
            tick: 1,
            legend: 1,
            line: if width >= 300 { 2 } else { 1 },
        }
    }
}

fn finite_points(series: &Series) -> impl Iterator<Item = (f64, f64)> + '_ {
    series
        .points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

fn data_bounds(chart: &Chart) -> Option<(f64, f64, f64, f64)> {
    let mut bounds: Option<(f64, f64, f64, f64)> = None;
    for s in &chart.series {
        for (x, y) in finite_points(s) {
            bounds = Some(match bounds {
                None => (x, x, y, y),
                Some((x0, x1, y0, y1)) => (x0.min(x), x1.max(x), y0.min(y), y1.max(y)),
            });
        }
    }
    bounds
}

fn draw_chart(canvas: &mut Canvas, chart: &Chart, top: i64, panel_h: u32) {
    let w = canvas.width as i64;
    let h = panel_h as i64;
    let style = Style::for_size(canvas.width, panel_h);
    let pad = 8;
    let tick_len = 4;

    // Title.
    let title_y = top + pad;
    let title_w = text_w(&chart.title, style.title);
    canvas.text((w - title_w) / 2, title_y, &chart.title, style.title, TEXT);
    let title_h = if chart.title.is_empty() {
        0
    } else {
        text_h(style.title) + 8
    };

    // Vertical layout: plot top/bottom don't depend on tick labels.
    let plot_top = top + pad + title_h + 4;
    let x_label_h = if chart.x_label.is_empty() {
        0
    } else {
        text_h(style.label) + 6
    };
    let plot_bottom = top + h - 1 - pad - x_label_h - text_h(style.tick) - tick_len - 4;
    let plot_h = (plot_bottom - plot_top).max(1);

    let bounds = data_bounds(chart);
    let (bx0, bx1, by0, by1) = bounds.unwrap_or((0.0, 1.0, 0.0, 1.0));

    let y_target = ((plot_h / 45) as usize).clamp(2, 8);
    let y_ticks = TickSet::new(by0, by1, y_target);
    let y_labels = y_ticks.labels();
    let y_label_w = y_labels
        .iter()
        .map(|l| text_w(l, style.tick))
        .max()
        .unwrap_or(0);
    let y_axis_label_w = if chart.y_label.is_empty() {
        0
    } else {
        text_h(style.label) + 8
    };
    let plot_left = pad + y_axis_label_w + y_label_w + 4 + tick_len;

    // X ticks: start from the room available and back off until labels do not collide.
    let mut x_ticks = TickSet::new(bx0, bx1, 2);
    let mut x_labels = x_ticks.labels();
    let mut plot_right = w - 1 - pad;
    let mut target = (((plot_right - plot_left).max(1) / 70) as usize).clamp(2, 10);
    while target >= 1 {
        let ticks = TickSet::new(bx0, bx1, target);
        let labels = ticks.labels();
        let last_half = labels.last().map_or(0, |l| text_w(l, style.tick) / 2);
        let right = w - 1 - pad.max(last_half + 2);
        let plot_w = (right - plot_left).max(1);
        let widest = labels
            .iter()
            .map(|l| text_w(l, style.tick))
            .max()
            .unwrap_or(0);
        let spacing = plot_w as f64 / (ticks.values.len().max(2) - 1) as f64;
        x_ticks = ticks;
        x_labels = labels;
        plot_right = right;
        if spacing >= (widest + 10) as f64 || target == 1 {
            break;
        }
        target -= 1;
    }
    let plot = Rect {
        x0: plot_left,
        y0: plot_top,
        x1: plot_right.max(plot_left + 1),
        y1: plot_top + plot_h,
    };
    let plot_w = plot.x1 - plot.x0;

    let (xlo, xhi) = (x_ticks.lo(), x_ticks.hi());
    let (ylo, yhi) = (y_ticks.lo(), y_ticks.hi());
    let map_x = |x: f64| -> i64 {
        let t = (x - xlo) / (xhi - xlo);
        plot.x0 + (t * plot_w as f64).round().clamp(-1e6, 1e6) as i64
    };
    let map_y = |y: f64| -> i64 {
        let t = (y - ylo) / (yhi - ylo);
        plot.y1 - (t * plot_h as f64).round().clamp(-1e6, 1e6) as i64
    };

    // Grid, ticks and tick labels.
    for (v, label) in y_ticks.values.iter().zip(&y_labels) {
        let py = map_y(*v);
        canvas.hline(plot.x0 + 1, plot.x1 - 1, py, GRID);
        canvas.hline(plot.x0 - tick_len, plot.x0 - 1, py, AXIS);
        let lw = text_w(label, style.tick);
        canvas.text(
            plot.x0 - tick_len - 3 - lw,
            py - text_h(style.tick) / 2,
            label,
            style.tick,
            TEXT,
        );
    }
    for (v, label) in x_ticks.values.iter().zip(&x_labels) {
        let px = map_x(*v);
        canvas.vline(px, plot.y0 + 1, plot.y1 - 1, GRID);
        canvas.vline(px, plot.y1 + 1, plot.y1 + tick_len, AXIS);
        let lw = text_w(label, style.tick);
        canvas.text(px - lw / 2, plot.y1 + tick_len + 4, label, style.tick, TEXT);
    }
    canvas.stroke_rect(plot, AXIS);

    // Axis labels.
    if !chart.x_label.is_empty() {
        let lw = text_w(&chart.x_label, style.label);
        canvas.text(
            plot.x0 + (plot_w - lw) / 2,
            plot.y1 + tick_len + 4 + text_h(style.tick) + 6,
            &chart.x_label,
            style.label,
            TEXT,
        );
    }
    if !chart.y_label.is_empty() {
        let lw = text_w(&chart.y_label, style.label);
        canvas.text_vertical(
            pad,
            plot.y0 + (plot_h + lw) / 2,
            &chart.y_label,
            style.label,
            TEXT,
        );
    }

    // Series, clipped to the inside of the frame.
    let inner = Rect {
        x0: plot.x0 + 1,
        y0: plot.y0 + 1,
        x1: plot.x1 - 1,
        y1: plot.y1 - 1,
    };
    for (i, series) in chart.series.iter().enumerate() {
        let color = series_color(i);
        let pts: Vec<(i64, i64)> = finite_points(series)
            .map(|(x, y)| (map_x(x), map_y(y)))
            .collect();
        for pair in pts.windows(2) {
            canvas.line(pair[0], pair[1], style.line, color, inner);
        }
        // Markers for sparse series (e.g. evaluation points), and always for a lone point.
        if pts.len() <= 40 {
            let r = if pts.len() == 1 { 3 } else { 2 };
            for &(px, py) in &pts {
                for yy in py - r..=py + r {
                    for xx in px - r..=px + r {
                        if inner.contains(xx, yy) {
                            canvas.set(xx, yy, color);
                        }
                    }
                }
            }
        }
    }

    if bounds.is_none() {
        let msg = "no data";
        let s = style.title;
        canvas.text(
            plot.x0 + (plot_w - text_w(msg, s)) / 2,
            plot.y0 + (plot_h - text_h(s)) / 2,
            msg,
            s,
            MUTED,
        );
    }

    draw_legend(canvas, chart, inner, &style);
}

fn draw_legend(canvas: &mut Canvas, chart: &Chart, inner: Rect, style: &Style) {
    let entries: Vec<(usize, &str)> = chart
        .series
        .iter()
        .enumerate()
        .filter(|(_, s)| finite_points(s).next().is_some())
        .map(|(i, s)| (i, s.name.as_str()))
        .collect();
    if entries.is_empty() {
        return;
    }
    let s = style.legend;
    let swatch = 16;
    let row_h = text_h(s) + 5;
    let name_w = entries.iter().map(|(_, n)| text_w(n, s)).max().unwrap_or(0);
    let box_w = 6 + swatch + 5 + name_w + 6;
    let box_h = 5 + row_h * entries.len() as i64 + 1;
    let margin = 6;

    // Put the legend in whichever corner covers the fewest already-drawn series pixels.
    let corners = [
        (inner.x1 - margin - box_w, inner.y0 + margin), // top right
        (inner.x0 + margin, inner.y0 + margin),         // top left
        (inner.x1 - margin - box_w, inner.y1 - margin - box_h), // bottom right
        (inner.x0 + margin, inner.y1 - margin - box_h), // bottom left
    ];
    let covered = |(x0, y0): (i64, i64)| -> usize {
        let mut n = 0;
        for y in y0..=y0 + box_h {
            for x in x0..=x0 + box_w {
                if let Some(c) = canvas.get(x, y) {
                    if c != BACKGROUND && c != GRID {
                        n += 1;
                    }
                }
            }
        }
        n
    };
    let mut best = corners[0];
    let mut best_n = usize::MAX;
    for corner in corners {
        let n = covered(corner);
        if n < best_n {
            best = corner;
            best_n = n;
        }
    }
    let (x0, y0) = best;
    let frame = Rect {
        x0,
        y0,
        x1: x0 + box_w,
        y1: y0 + box_h,
    };
    canvas.fill_rect(frame, BACKGROUND);
    canvas.stroke_rect(frame, SEPARATOR);
    for (row, (i, name)) in entries.iter().enumerate() {
        let ty = y0 + 5 + row as i64 * row_h;
        let cy = ty + text_h(s) / 2;
        let color = series_color(*i);
        canvas.fill_rect(
            Rect {
                x0: x0 + 6,
                y0: cy - 1,
                x1: x0 + 6 + swatch - 1,
                y1: cy,
            },
            color,
        );
        canvas.text(x0 + 6 + swatch + 5, ty, name, s, TEXT);
    }
}

// ---------------------------------------------------------------------------------------------
// metrics.jsonl
// ---------------------------------------------------------------------------------------------

/// Keys that are throughput/timing bookkeeping rather than metrics; plotting them next to
/// accuracy-like values would flatten everything else.
fn is_bookkeeping(key: &str) -> bool {
    key.ends_with("_runtime") || key.ends_with("_per_second") || key == "eval_epoch"
}

/// Builds charts from a trainer's `metrics.jsonl` (one JSON object per line, each with a numeric
/// `"step"`):
///
/// 1. "training loss": `loss` and, when present, `eval_loss` against step;
/// 2. "evaluation": every other `eval_*` metric (timing keys such as `eval_runtime` and
///    `eval_samples_per_second` are left out); omitted when there are none;
/// 3. "learning rate": `learning_rate` (or `lr`); omitted when absent.
///
/// Charts with nothing to show are left out, so empty input gives an empty `Vec`. Malformed lines,
/// lines without a finite numeric step, and non-numeric or non-finite values are skipped.
pub fn plot_metrics_jsonl(jsonl_text: &str) -> Vec<Chart> {
    let mut columns: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in jsonl_text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(line)
        else {
            continue;
        };
        let Some(step) = obj
            .get("step")
            .and_then(serde_json::Value::as_f64)
            .filter(|s| s.is_finite())
        else {
            continue;
        };
        for (key, value) in &obj {
            if key == "step" {
                continue;
            }
            if let Some(v) = value.as_f64().filter(|v| v.is_finite()) {
                columns.entry(key.clone()).or_default().push((step, v));
            }
        }
    }
    for points in columns.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let mut take = |key: &str| -> Option<Series> {
        columns.remove(key).map(|points| Series {
            name: key.to_string(),
            points,
        })
    };

    let mut charts = Vec::new();
    let loss: Vec<Series> = [take("loss"), take("eval_loss")]
        .into_iter()
        .flatten()
        .collect();
    if !loss.is_empty() {
        charts.push(Chart {
            title: "training loss".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            series: loss,
        });
    }
    let lr = take("learning_rate").or_else(|| take("lr"));

    let eval: Vec<Series> = columns
        .iter()
        .filter(|(k, _)| k.starts_with("eval_") && !is_bookkeeping(k))
        .map(|(k, points)| Series {
            name: k.clone(),
            points: points.clone(),
        })
        .collect();
    if !eval.is_empty() {
        charts.push(Chart {
            title: "evaluation".into(),
            x_label: "step".into(),
            y_label: "metric".into(),
            series: eval,
        });
    }
    if let Some(mut lr) = lr {
        lr.name = "learning_rate".into();
        charts.push(Chart {
            title: "learning rate".into(),
            x_label: "step".into(),
            y_label: "learning rate".into(),
            series: vec![lr],
        });
    }
    charts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approx(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn ticks_zero_to_one() {
        let t = nice_ticks(0.0, 1.0, 5);
        assert!(approx(&t, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), "{t:?}");
        // Computed without accumulation, so exactly the decimal literals.
        assert_eq!(t[3], 0.6);
        let labels: Vec<String> = t.iter().map(|&v| format_tick(v, 0.2)).collect();
        assert_eq!(labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
    }

    #[test]
    fn ticks_use_1_2_5_steps_and_cover_range() {
        for &(lo, hi, target) in &[
            (0.0, 1.0, 5),
            (0.13, 0.87, 4),
            (-3.7, 12.2, 6),
            (1.0, 1000.0, 5),
            (2.1e-5, 4.9e-5, 5),
            (-1e9, 3e9, 7),
            (0.5, 0.5004, 3),
        ] {
            let t = nice_ticks(lo, hi, target);
            assert!(t.len() >= 2, "{t:?}");
            assert!(t[0] <= lo && *t.last().unwrap() >= hi, "{lo}..{hi}: {t:?}");
            let step = t[1] - t[0];
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!(
                [1.0, 2.0, 5.0, 10.0]
                    .iter()
                    .any(|m| (mantissa - m).abs() < 1e-6),
                "{lo}..{hi}: step {step}"
            );
            for w in t.windows(2) {
                assert!(((w[1] - w[0]) - step).abs() < step * 1e-9);
            }
        }
        assert!(approx(
            &nice_ticks(1.0, 1000.0, 5),
            &[0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]
        ));
        assert!(approx(
            &nice_ticks(-3.7, 12.2, 4),
            &[-5.0, 0.0, 5.0, 10.0, 15.0]
        ));
    }

    #[test]
    fn ticks_degenerate_ranges() {
        // Single point / constant series: widened around the value.
        let t = nice_ticks(2.0, 2.0, 5);
        assert!(t[0] < 2.0 && *t.last().unwrap() > 2.0, "{t:?}");
        let t = nice_ticks(0.0, 0.0, 5);
        assert!(t[0] < 0.0 && *t.last().unwrap() > 0.0, "{t:?}");
        // Non-finite and swapped bounds.
        assert!(approx(
            &nice_ticks(f64::NAN, f64::INFINITY, 5),
            &nice_ticks(0.0, 1.0, 5)
        ));
        assert_eq!(nice_ticks(1.0, 0.0, 5), nice_ticks(0.0, 1.0, 5));
        assert!(nice_ticks(0.0, 1.0, 0).len() >= 2);
        assert!(nice_ticks(-f64::MAX, f64::MAX, 5).len() >= 2);
        assert!(nice_ticks(f64::MIN_POSITIVE, f64::MIN_POSITIVE, 5).len() >= 2);
    }

    #[test]
    fn tick_labels() {
        assert_eq!(format_tick(0.0, 1e-5), "0");
        assert_eq!(format_tick(2e-5, 1e-5), "2e-5");
        assert_eq!(format_tick(1.5e-5, 5e-6), "1.5e-5");
        assert_eq!(format_tick(5e-4, 5e-4), "5e-4");
        assert_eq!(format_tick(0.001, 0.001), "0.001");
        assert_eq!(format_tick(250.0, 50.0), "250");
        assert_eq!(format_tick(-0.5, 0.5), "-0.5");
        assert_eq!(format_tick(3e6, 1e6), "3e6");
        assert_eq!(format_tick(1e-17, 0.1), "0.0");
        assert_eq!(format_tick(-1e-17, 0.1), "0.0");
    }

    #[test]
    fn font_covers_printable_ascii() {
        for c in ' '..='~' {
            let g = font::glyph(c);
            assert_eq!(g.iter().all(|&b| b == 0), c == ' ', "{c:?}");
        }
        assert_eq!(font::glyph('\u{e9}'), [0x7F, 0x41, 0x41, 0x41, 0x7F]);
        assert_eq!(font::text_width("ab"), 11);
    }
}
