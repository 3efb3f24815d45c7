//! Server-rendered SVG charts for the reward-model section (plotters' SVG
//! backend: text is left to the browser, so no font files are needed).

use plotters::prelude::*;

const SIZE: (u32, u32) = (420, 260);
const BLUE: RGBColor = RGBColor(36, 87, 197);

/// A line chart with points; `None` when there is nothing to draw.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
    y_range: Option<(f64, f64)>,
    diagonal: bool,
) -> Option<String> {
    if points.is_empty() || points.iter().any(|(x, y)| !x.is_finite() || !y.is_finite()) {
        return None;
    }
    let (mut x0, mut x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
        (a.min(*x), b.max(*x))
    });
    if x1 <= x0 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let (y0, y1) = y_range.unwrap_or_else(|| {
        let (a, b) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), (_, y)| {
            (a.min(*y), b.max(*y))
        });
        let pad = ((b - a) * 0.1).max(1e-3);
        (a - pad, b + pad)
    });
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(32)
            .y_label_area_size(44)
            .build_cartesian_2d(x0..x1, y0..y1)
            .ok()?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_labels(6)
            .y_labels(6)
            .light_line_style(RGBColor(235, 238, 242))
            .draw()
            .ok()?;
        if diagonal {
            chart
                .draw_series(LineSeries::new(
                    [(x0, x0), (x1, x1)],
                    RGBColor(170, 170, 170),
                ))
                .ok()?;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                BLUE.stroke_width(2),
            ))
            .ok()?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
            .ok()?;
        root.present().ok()?;
    }
    Some(svg)
}

/// Held-out accuracy of each version against the judgments it trained on.
pub fn accuracy_vs_labels(points: &[(f64, f64)]) -> Option<String> {
    line_chart(
        "Held-out accuracy by training labels",
        "judgments used for training",
        "accuracy",
        points,
        Some((0.4, 1.0)),
        false,
    )
}

/// Calibration: mean predicted P(a preferred) against the observed share, per bin.
pub fn calibration(points: &[(f64, f64)]) -> Option<String> {
    line_chart(
        "Calibration (current version)",
        "predicted probability",
        "observed frequency",
        points,
        Some((0.0, 1.0)),
        true,
    )
}

/// Training loss by step.
pub fn loss_curve(points: &[(f64, f64)]) -> Option<String> {
    line_chart(
        "Training loss (current version)",
        "step",
        "batch loss",
        points,
        None,
        false,
    )
}

/// Policies' strengths with their intervals, strongest on top; `None` when there are none.
/// `rows`: (policy, strength, low, high).
pub fn strengths(rows: &[(String, f64, f64, f64)]) -> Option<String> {
    if rows.is_empty()
        || rows
            .iter()
            .any(|r| !(r.1.is_finite() && r.2.is_finite() && r.3.is_finite()))
    {
        return None;
    }
    let lo = rows.iter().map(|r| r.2).fold(f64::MAX, f64::min);
    let hi = rows.iter().map(|r| r.3).fold(f64::MIN, f64::max);
    let pad = ((hi - lo) * 0.1).max(0.05);
    let n = rows.len();
    let height = (80 + 28 * n as u32).max(140);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (520, height)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Strength (log-odds) with 95% intervals", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(32)
            .y_label_area_size(110)
            .build_cartesian_2d((lo - pad)..(hi + pad), -0.5..(n as f64 - 0.5))
            .ok()?;
        // Row i from the top is the i-th strongest.
        let y = |i: usize| (n - 1 - i) as f64;
        chart
            .configure_mesh()
            .x_desc("strength")
            .y_labels(n)
            .y_label_formatter(&|v: &f64| {
                let i = (n as f64 - 1.0 - v.round()) as usize;
                rows.get(i).map(|r| r.0.clone()).unwrap_or_default()
            })
            .disable_y_mesh()
            .light_line_style(RGBColor(235, 238, 242))
            .draw()
            .ok()?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                PathElement::new(vec![(r.2, y(i)), (r.3, y(i))], BLUE.stroke_width(2))
            }))
            .ok()?;
        chart
            .draw_series(
                rows.iter()
                    .enumerate()
                    .map(|(i, r)| Circle::new((r.1, y(i)), 4, BLUE.filled())),
            )
            .ok()?;
        root.present().ok()?;
    }
    Some(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_labels() {
        let svg = accuracy_vs_labels(&[(50.0, 0.6), (120.0, 0.74), (300.0, 0.86)]).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
        assert!(svg.contains("Held-out accuracy") && svg.contains("judgments used for training"));
        assert!(svg.contains("<circle"), "one point per version");
        // Kept for a look: docs/annotator.md lists what the tests leave in target/screenshots.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(dir.join("chart-accuracy.svg"), &svg);
        }
        assert!(
            calibration(&[(0.1, 0.15), (0.5, 0.45), (0.9, 0.88)])
                .unwrap()
                .contains("<polyline")
        );
        assert!(loss_curve(&[]).is_none());
        assert!(loss_curve(&[(1.0, f64::NAN)]).is_none());
        assert!(loss_curve(&[(1.0, 0.7)]).is_some(), "one point still draws");
    }
}
