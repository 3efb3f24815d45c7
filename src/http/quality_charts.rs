//! Server-rendered SVG charts of the quality pages (plotters' SVG backend, as in `charts`):
//! a rater's day-by-day series and the agreement heatmap of rater pairs.

use plotters::prelude::*;

use crate::quality::series::DayPoint;

const BLUE: RGBColor = RGBColor(36, 87, 197);
const ORANGE: RGBColor = RGBColor(214, 110, 30);
/// The heatmap shows at most this many raters (the first ones in the order given).
pub const HEATMAP_MAX: usize = 40;

/// Majority agreement and left share by day; `None` when there are no days.
pub fn rater_days(days: &[DayPoint]) -> Option<String> {
    let first = days.first()?.day;
    let x = |d: &DayPoint| (d.day - first).whole_days() as f64;
    let series = |f: fn(&DayPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        days.iter().filter_map(|d| Some((x(d), f(d)?))).collect()
    };
    let agree = series(|d| d.majority_agreement.share);
    let left = series(|d| d.left.share);
    let x1 = days.last().map(x).unwrap_or(0.0).max(1.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 280)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption("By day", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(32)
            .y_label_area_size(44)
            .build_cartesian_2d(-0.2..x1 + 0.2, 0.0..1.0)
            .ok()?;
        chart
            .configure_mesh()
            .x_desc("days since the first judgment")
            .y_desc("share")
            .x_labels(8)
            .y_labels(6)
            .light_line_style(RGBColor(235, 238, 242))
            .draw()
            .ok()?;
        for (points, color, label) in [
            (&agree, BLUE, "agreement with majority"),
            (&left, ORANGE, "left share"),
        ] {
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .ok()?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .ok()?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(RGBColor(200, 200, 200))
            .draw()
            .ok()?;
        root.present().ok()?;
    }
    Some(svg)
}

/// Colour of a kappa: white at 0, blue towards 1, red towards -1, grey when undefined.
fn kappa_colour(k: Option<f64>) -> RGBColor {
    let Some(k) = k.filter(|k| k.is_finite()) else {
        return RGBColor(225, 225, 225);
    };
    let t = k.clamp(-1.0, 1.0).abs();
    let mix = |c: u8| (255.0 - t * (255.0 - f64::from(c))) as u8;
    if k >= 0.0 {
        RGBColor(mix(36), mix(87), mix(197))
    } else {
        RGBColor(mix(200), mix(40), mix(40))
    }
}

/// Cohen's kappa of every rater pair as a square heatmap; `kappa[i][j]` for raters i and j.
/// `None` with fewer than two raters.
pub fn heatmap(names: &[String], kappa: &[Vec<Option<f64>>]) -> Option<String> {
    let n = names.len().min(HEATMAP_MAX);
    if n < 2 {
        return None;
    }
    let (cell, pad) = (26i32, 110i32);
    let side = pad + cell * n as i32 + 10;
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (side as u32, side as u32 + 20)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let style = ("sans-serif", 12).into_font().color(&BLACK);
        root.draw(&Text::new(
            "Cohen's kappa of rater pairs",
            (10, 4),
            ("sans-serif", 15),
        ))
        .ok()?;
        for (i, name) in names.iter().take(n).enumerate() {
            let at = pad + cell * i as i32;
            let short: String = name.chars().take(14).collect();
            root.draw(&Text::new(short.clone(), (4, at + 8), style.clone()))
                .ok()?;
            root.draw(&Text::new(
                short,
                (at + 4, pad - 8),
                style.clone().transform(FontTransform::Rotate270),
            ))
            .ok()?;
            for (j, &k) in kappa[i].iter().enumerate().take(n) {
                let x = pad + cell * j as i32;
                let k = if i == j { Some(1.0) } else { k };
                root.draw(&Rectangle::new(
                    [(x, at), (x + cell - 1, at + cell - 1)],
                    kappa_colour(k).filled(),
                ))
                .ok()?;
                if i != j
                    && let Some(k) = k
                {
                    let colour = if k.abs() > 0.6 { WHITE } else { BLACK };
                    let label = format!("{k:.1}");
                    root.draw(&Text::new(
                        label,
                        (x + 3, at + 8),
                        ("sans-serif", 10).into_font().color(&colour),
                    ))
                    .ok()?;
                }
            }
        }
        root.present().ok()?;
    }
    Some(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::detectors::Proportion;

    #[test]
    fn heatmap_has_a_cell_per_pair_and_grey_for_undefined() {
        let names = vec!["ann".to_string(), "bob".into(), "cy".into()];
        let k = vec![
            vec![None, Some(0.8), None],
            vec![Some(0.8), None, Some(-0.5)],
            vec![None, Some(-0.5), None],
        ];
        let svg = heatmap(&names, &k).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("ann") && svg.contains("0.8"));
        assert_eq!(
            svg.matches("<rect").count(),
            1 + 9,
            "background and 3 x 3 cells"
        );
        assert!(
            svg.contains("#E1E1E1"),
            "grey for an undefined kappa: {svg}"
        );
        assert!(heatmap(&names[..1], &k).is_none());
    }

    #[test]
    fn day_chart_draws_both_series() {
        let day = |d: u8, agree: usize, left: usize| DayPoint {
            day: time::Date::from_calendar_date(2026, time::Month::November, d).unwrap(),
            judgments: 10,
            majority_agreement: Proportion::new(agree, 10),
            left: Proportion::new(left, 10),
            median_ms: None,
        };
        let svg = rater_days(&[day(1, 8, 5), day(3, 6, 9)]).unwrap();
        assert!(svg.contains("left share") && svg.contains("agreement with majority"));
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(rater_days(&[]).is_none());
    }
}
