//! The delivery report as a picture: per week, successful deploys and
//! change failures as bars, the median failed-deployment recovery time as
//! a line (right-hand scale, minutes). A PNG drawn in memory with
//! plotters; its text uses a font built into the binary, so the chart
//! needs no fontconfig or system fonts (a slim container has none).

use super::delivery::DeliveryReport;
use plotters::prelude::*;

pub const WIDTH: u32 = 900;
pub const HEIGHT: u32 = 450;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");

fn register_font() -> Result<(), String> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| "the chart's built-in font cannot be read".to_string())
    })
    .clone()
}

/// The report's weekly chart, as PNG bytes.
pub fn png(report: &DeliveryReport) -> Result<Vec<u8>, String> {
    register_font()?;
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    draw(report, &mut pixels).map_err(|e| format!("cannot draw the chart: {e}"))?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| format!("cannot encode the chart: {e}"))?;
    writer.write_image_data(&pixels).map_err(|e| format!("cannot encode the chart: {e}"))?;
    writer.finish().map_err(|e| format!("cannot encode the chart: {e}"))?;
    Ok(out)
}

fn draw(report: &DeliveryReport, pixels: &mut [u8]) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let weeks = &report.weeks;
    let n = weeks.len().max(1) as f64;
    let top = weeks.iter().map(|w| w.deploys.max(w.failures)).max().unwrap_or(0).max(1) as f64 * 1.2;
    let slowest = weeks.iter().filter_map(|w| w.recovery_minutes).fold(0.0, f64::max).max(30.0) * 1.2;
    let scope = report.service.clone().unwrap_or_else(|| "all services".into());
    let caption = format!(
        "Weekly deploys, failures, recovery · {scope} · {} to {}",
        report.since.format("%Y-%m-%d"),
        report.until.format("%Y-%m-%d")
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .right_y_label_area_size(60)
        // Week i is centred on x = i, so the axis labels sit under its bars.
        .build_cartesian_2d(-0.5f64..n - 0.5, 0f64..top)?
        .set_secondary_coord(-0.5f64..n - 0.5, 0f64..slowest);
    let labels: Vec<String> = weeks.iter().map(|w| w.start.format("%m-%d").to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(weeks.len().clamp(1, 14))
        .x_label_formatter(&|x| {
            let at = x.round();
            if (x - at).abs() > 0.01 || at < 0.0 {
                return String::new();
            }
            labels.get(at as usize).cloned().unwrap_or_default()
        })
        .y_labels((top.floor() as usize + 1).min(11))
        .y_label_formatter(&|y| if y.fract().abs() < 0.01 { format!("{y:.0}") } else { String::new() })
        .y_desc("deploys / failures")
        .label_style(("sans-serif", 13))
        .draw()?;
    chart.configure_secondary_axes().y_desc("recovery (min)").label_style(("sans-serif", 13)).draw()?;
    let deploys = RGBColor(46, 125, 50);
    let failures = RGBColor(198, 40, 40);
    let recovery = RGBColor(21, 101, 192);
    chart
        .draw_series(weeks.iter().enumerate().map(|(i, w)| {
            Rectangle::new([(i as f64 - 0.4, 0.0), (i as f64 - 0.02, w.deploys as f64)], deploys.filled())
        }))?
        .label("successful deploys")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], deploys.filled()));
    chart
        .draw_series(weeks.iter().enumerate().map(|(i, w)| {
            Rectangle::new([(i as f64 + 0.02, 0.0), (i as f64 + 0.4, w.failures as f64)], failures.filled())
        }))?
        .label("change failures")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], failures.filled()));
    let points: Vec<(f64, f64)> =
        weeks.iter().enumerate().filter_map(|(i, w)| Some((i as f64, w.recovery_minutes?))).collect();
    chart
        .draw_secondary_series(LineSeries::new(points.clone(), recovery.stroke_width(3)))?
        .label("median recovery (min)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], recovery.stroke_width(3)));
    chart.draw_secondary_series(points.into_iter().map(|p| Circle::new(p, 4, recovery.filled())))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}
