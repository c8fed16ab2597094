//! Renders a trainer's metrics.jsonl to a PNG.
//!
//! `cargo run -p hone-plot --example plot_metrics -- METRICS.jsonl OUT.png [WIDTH] [HEIGHT_PER_CHART]`

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: plot_metrics METRICS.jsonl OUT.png [WIDTH] [HEIGHT_PER_CHART]");
        std::process::exit(2);
    }
    let width = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(900);
    let height = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(360);
    let text = std::fs::read_to_string(&args[0])?;
    let charts = hone_plot::plot_metrics_jsonl(&text);
    hone_plot::save_png(&args[1], &charts, width, height)?;
    println!("wrote {} chart(s) to {}", charts.len(), args[1]);
    Ok(())
}
