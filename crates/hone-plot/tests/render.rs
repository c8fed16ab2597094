use hone_plot::{plot_metrics_jsonl, render_charts, save_png, series_color, Chart, Series};

struct Image {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Image {
    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// All `(x, y)` positions holding exactly `color`.
    fn find(&self, color: [u8; 3]) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for y in 0..self.height {
            for x in 0..self.width {
                if self.pixel(x, y) == color {
                    out.push((x, y));
                }
            }
        }
        out
    }
}

fn decode(bytes: &[u8]) -> Image {
    let decoder = png::Decoder::new(bytes);
    let mut reader = decoder.read_info().expect("valid PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("valid PNG data");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    Image {
        width: info.width,
        height: info.height,
        rgb: buf,
    }
}

fn chart(title: &str, series: Vec<Series>) -> Chart {
    Chart {
        title: title.into(),
        x_label: "step".into(),
        y_label: "value".into(),
        series,
    }
}

fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.into(),
        points,
    }
}

#[test]
fn png_decodes_with_stacked_size() {
    let charts = vec![
        chart("a", vec![series("x", vec![(0.0, 1.0), (1.0, 2.0)])]),
        chart("b", vec![series("y", vec![(0.0, 3.0), (5.0, -1.0)])]),
        chart("c", vec![]),
    ];
    let img = decode(&render_charts(&charts, 640, 300));
    assert_eq!((img.width, img.height), (640, 900));
    assert_eq!(img.rgb.len(), 640 * 900 * 3);
}

#[test]
fn constant_series_line_is_drawn_mid_plot() {
    // A constant series: the y range is widened around the value, so the line sits in the
    // vertical middle of the plot and crosses its horizontal middle.
    let c = chart("flat", vec![series("flat", vec![(0.0, 0.5), (100.0, 0.5)])]);
    let img = decode(&render_charts(&[c], 600, 400));
    let color = series_color(0);
    let mid_x = img.width / 2;
    let hits: Vec<u32> = (0..img.height)
        .filter(|&y| img.pixel(mid_x, y) == color)
        .collect();
    assert!(!hits.is_empty(), "no series pixel in the middle column");
    for &y in &hits {
        assert!(
            y > img.height * 3 / 10 && y < img.height * 7 / 10,
            "line at y={y}"
        );
    }
    // The line spans most of the width.
    let on = img.find(color);
    let min_x = on.iter().map(|p| p.0).min().unwrap();
    let max_x = on.iter().map(|p| p.0).max().unwrap();
    assert!(max_x - min_x > img.width / 2, "{min_x}..{max_x}");
}

#[test]
fn rising_line_goes_from_bottom_left_to_top_right() {
    let c = chart(
        "rise",
        vec![
            series("up", (0..=50).map(|i| (i as f64, i as f64)).collect()),
            series(
                "down",
                (0..=50).map(|i| (i as f64, 50.0 - i as f64)).collect(),
            ),
        ],
    );
    let img = decode(&render_charts(&[c], 800, 400));
    for (i, rising) in [(0, true), (1, false)] {
        let on = img.find(series_color(i));
        assert!(on.len() > 200, "series {i}: {} pixels", on.len());
        // Leftmost pixels vs rightmost pixels: compare their heights (legend swatch excluded by
        // looking only at the extremes of the line, which reach the frame).
        let min_x = on.iter().map(|p| p.0).min().unwrap();
        let max_x = on.iter().map(|p| p.0).max().unwrap();
        let y_at = |x: u32| {
            let ys: Vec<u32> = on.iter().filter(|p| p.0 == x).map(|p| p.1).collect();
            ys.iter().sum::<u32>() / ys.len() as u32
        };
        let (left, right) = (y_at(min_x), y_at(max_x));
        if rising {
            assert!(left > right + 100, "left {left} right {right}");
        } else {
            assert!(right > left + 100, "left {left} right {right}");
        }
    }
}

#[test]
fn single_point_and_odd_series_do_not_panic() {
    let charts = vec![
        chart("single", vec![series("one", vec![(3.0, 7.0)])]),
        chart("zero", vec![series("z", vec![(0.0, 0.0)])]),
        chart("empty series", vec![series("nothing", vec![])]),
        chart(
            "non-finite",
            vec![series(
                "nan",
                vec![
                    (f64::NAN, 1.0),
                    (1.0, f64::INFINITY),
                    (2.0, f64::NEG_INFINITY),
                ],
            )],
        ),
        chart(
            "huge",
            vec![series(
                "big",
                vec![(-f64::MAX, f64::MAX), (f64::MAX, -f64::MAX)],
            )],
        ),
        chart(
            "tiny",
            vec![series("t", vec![(0.0, 1e-300), (1e-300, 2e-300)])],
        ),
        Chart::default(),
    ];
    let img = decode(&render_charts(&charts, 500, 250));
    assert_eq!((img.width, img.height), (500, 250 * charts.len() as u32));
    // The lone point is drawn as a marker.
    let single = decode(&render_charts(&charts[..1], 500, 250));
    assert!(!single.find(series_color(0)).is_empty());
}

#[test]
fn degenerate_sizes_still_give_valid_pngs() {
    let c = chart("x", vec![series("s", vec![(0.0, 1.0), (1.0, 0.0)])]);
    for (w, h) in [(0, 0), (1, 1), (10, 10), (40, 30), (3000, 20)] {
        let img = decode(&render_charts(std::slice::from_ref(&c), w, h));
        assert_eq!((img.width, img.height), (w.max(1), h.max(1)));
    }
    let img = decode(&render_charts(&[], 320, 200));
    assert_eq!((img.width, img.height), (320, 200));
}

const METRICS: &str = r#"{"step": 10, "loss": 2.5, "learning_rate": 1e-5, "grad_norm": 3.1}
{"step": 20, "loss": 2.1, "learning_rate": 2e-5}
{"step": 20, "eval_loss": 2.3, "eval_accuracy": 0.41, "eval_f1": 0.35, "eval_runtime": 12.5, "eval_samples_per_second": 800.0}
{"step": 30, "loss": 1.7, "learning_rate": 3e-5}
not json at all
{"step": "forty", "loss": 1.0}
{"loss": 1.0}
[1, 2, 3]
{"step": 40, "loss": NaN}
{"step": 40, "loss": "1.2", "learning_rate": null}
{"step": 40, "eval_loss": 1.9, "eval_accuracy": 0.62, "eval_f1": 0.58, "eval_note": "ok"}
{"step": 50, "loss": 1.3, "learning_rate": 2.5e-5}
{"step": 1e999, "loss": 1.0}
"#;

#[test]
fn metrics_jsonl_builds_three_charts() {
    let charts = plot_metrics_jsonl(METRICS);
    let titles: Vec<&str> = charts.iter().map(|c| c.title.as_str()).collect();
    assert_eq!(titles, ["training loss", "evaluation", "learning rate"]);

    let names = |c: &Chart| c.series.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&charts[0]), ["loss", "eval_loss"]);
    assert_eq!(
        charts[0].series[0].points,
        [(10.0, 2.5), (20.0, 2.1), (30.0, 1.7), (50.0, 1.3)]
    );
    assert_eq!(charts[0].series[1].points, [(20.0, 2.3), (40.0, 1.9)]);
    assert_eq!(names(&charts[1]), ["eval_accuracy", "eval_f1"]);
    assert_eq!(charts[1].series[0].points, [(20.0, 0.41), (40.0, 0.62)]);
    assert_eq!(names(&charts[2]), ["learning_rate"]);
    assert_eq!(charts[2].series[0].points.len(), 4);
    for c in &charts {
        assert_eq!(c.x_label, "step");
    }

    let img = decode(&render_charts(&charts, 800, 320));
    assert_eq!((img.width, img.height), (800, 960));
}

#[test]
fn metrics_jsonl_omits_missing_charts() {
    let only_train = r#"{"step": 1, "loss": 1.0}
{"step": 2, "loss": 0.5}"#;
    let charts = plot_metrics_jsonl(only_train);
    assert_eq!(charts.len(), 1);
    assert_eq!(charts[0].series.len(), 1);

    let only_eval = r#"{"step": 5, "eval_accuracy": 0.5}"#;
    let charts = plot_metrics_jsonl(only_eval);
    assert_eq!(charts.len(), 1);
    assert_eq!(charts[0].title, "evaluation");
}

#[test]
fn empty_and_malformed_input_does_not_panic() {
    for input in [
        "",
        "\n\n   \n",
        "garbage",
        "{",
        "{\"step\": }",
        "null\ntrue\n42\n\"str\"",
        "{\"step\": null, \"loss\": 1}",
        "{\"step\": 1, \"loss\": {\"nested\": 1}}",
        "{\"step\": 1, \"loss\": [1, 2]}",
        "\u{0}\u{feff}{}",
        "{\"step\": -1e308, \"loss\": 1e308}\n{\"step\": 1e308, \"loss\": -1e308}",
    ] {
        let charts = plot_metrics_jsonl(input);
        let img = decode(&render_charts(&charts, 400, 200));
        assert_eq!(img.width, 400);
    }
    assert!(plot_metrics_jsonl("").is_empty());
    assert!(plot_metrics_jsonl("garbage\n{]").is_empty());
}

#[test]
fn save_png_writes_a_file() {
    let dir = std::env::temp_dir().join(format!("hone-plot-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("curves.png");
    save_png(&path, &plot_metrics_jsonl(METRICS), 700, 280).unwrap();
    let img = decode(&std::fs::read(&path).unwrap());
    assert_eq!((img.width, img.height), (700, 840));
    std::fs::remove_dir_all(&dir).unwrap();
}
