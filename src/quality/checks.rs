//! Per-rater checks of the report: drift within sessions and over days, and the flags with
//! their reasons.

use time::{Date, OffsetDateTime};

use super::{
    detectors::{self, Drift},
    figures::{Flag, RaterQuality},
};

/// A gap between judgments at least this long starts a new labeling session.
const SESSION_GAP: time::Duration = time::Duration::minutes(crate::rater::BREAK_MINUTES);

/// Session and day drift of majority agreement, from one rater's judgments in time order
/// with their agreement flag where defined.
pub(super) fn drifts(series: &[(OffsetDateTime, Option<bool>)]) -> (Drift, Drift) {
    let mut session = [(0, 0), (0, 0)];
    let mut start = 0;
    for i in 0..=series.len() {
        let ends = i == series.len() || (i > 0 && series[i].0 - series[i - 1].0 >= SESSION_GAP);
        if ends && i > start {
            let len = i - start;
            for (pos, (_, flag)) in series[start..i].iter().enumerate() {
                if let Some(f) = flag {
                    let half = usize::from(2 * pos >= len);
                    session[half].0 += usize::from(*f);
                    session[half].1 += 1;
                }
            }
            start = i;
        }
    }
    let days: Vec<Date> = {
        let mut d: Vec<Date> = series.iter().map(|(t, _)| t.date()).collect();
        d.dedup();
        d
    };
    let mut by_day = [(0, 0), (0, 0)];
    if days.len() >= 2 {
        let cut = days[days.len() / 2];
        for (t, flag) in series {
            if let Some(f) = flag {
                let half = usize::from(t.date() >= cut);
                by_day[half].0 += usize::from(*f);
                by_day[half].1 += 1;
            }
        }
    }
    (
        detectors::drift(session[0], session[1]),
        detectors::drift(by_day[0], by_day[1]),
    )
}

pub(super) fn flags(r: &RaterQuality) -> Vec<Flag> {
    let mut out = vec![];
    if r.gold_accuracy.n >= 3 && r.gold_accuracy.high < 0.8 {
        out.push(Flag {
            code: "low_gold_accuracy".into(),
            reason: format!(
                "gold accuracy {}: below 0.80 with 95% confidence",
                r.gold_accuracy.describe()
            ),
        });
    }
    if let Some(s) = r.position.share.share
        && r.position.p_value < 0.01
        && (s - 0.5).abs() >= 0.15
    {
        out.push(Flag {
            code: "position_bias".into(),
            reason: format!(
                "chose the left side {} (binomial test against 0.5: p = {:.2e})",
                r.position.share.describe(),
                r.position.p_value
            ),
        });
    }
    let (fast, early) = (&r.timing.too_fast, &r.timing.before_clip_end);
    if fast.low > 0.2 || early.low > 0.2 {
        out.push(Flag {
            code: "too_fast".into(),
            reason: format!(
                "answers under {} ms: {}; before the clips ended: {}",
                r.timing.floor_ms,
                fast.describe(),
                early.describe()
            ),
        });
    }
    if r.majority_agreement.n >= 5 && r.majority_agreement.high < 0.6 {
        out.push(Flag {
            code: "low_agreement".into(),
            reason: format!(
                "agreement with the other raters' majority {}: below 0.60 with 95% confidence",
                r.majority_agreement.describe()
            ),
        });
    }
    out
}
