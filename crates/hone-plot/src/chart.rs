//! Laying out and drawing one chart panel: title, axes, grid, ticks, series and legend.

use crate::canvas::{text_h, text_w, Canvas, Rect, Rgb};
use crate::ticks::TickSet;
use crate::{Chart, Series};

pub(crate) const BACKGROUND: Rgb = [255, 255, 255];
const GRID: Rgb = [226, 226, 226];
const AXIS: Rgb = [40, 40, 40];
const TEXT: Rgb = [20, 20, 20];
const MUTED: Rgb = [130, 130, 130];
pub(crate) const SEPARATOR: Rgb = [200, 200, 200];

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

/// Draws `chart` into the panel of height `panel_h` whose top edge is at `top`.
pub(crate) fn draw_chart(canvas: &mut Canvas, chart: &Chart, top: i64, panel_h: u32) {
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
