//! Training curves as a small self-contained SVG: per-task train loss (left) and each task's headline
//! test metric (right: accuracy, or the first Dice for segmentation) against the epoch.

use super::{EpochMetrics, Metrics};

/// The metric a curve shows for a task: "acc" if present, else the first Dice.
pub fn headline(m: &Metrics) -> (String, f64) {
    m.get_key_value("acc")
        .or_else(|| m.iter().find(|(k, _)| k.starts_with("dice_")))
        .map(|(k, v)| (k.clone(), *v))
        .unwrap_or_else(|| ("none".into(), f64::NAN))
}

const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/// One panel: a polyline per task, with min/max labels on the y axis.
fn panel(x0: f64, title: &str, series: Vec<Vec<f64>>) -> String {
    let (w, h, pad) = (360.0, 240.0, 40.0);
    let all: Vec<f64> = series.iter().flatten().copied().filter(|v| v.is_finite()).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (lo.min(0.0), lo.max(0.0) + 1.0) };
    let n = series.first().map_or(0, Vec::len).max(2) as f64 - 1.0;
    let px = |i: usize| x0 + pad + (w - 2.0 * pad) * i as f64 / n;
    let py = |v: f64| pad + (h - 2.0 * pad) * (1.0 - (v - lo) / (hi - lo));
    let mut s = format!(
        "<rect x='{x0}' y='0' width='{w}' height='{h}' fill='white' stroke='#ccc'/>\
         <text x='{}' y='20' text-anchor='middle' font-size='14'>{title}</text>\
         <text x='{}' y='{}' font-size='10' text-anchor='end'>{hi:.4}</text>\
         <text x='{}' y='{}' font-size='10' text-anchor='end'>{lo:.4}</text>\
         <text x='{}' y='{}' font-size='10' text-anchor='middle'>epoch</text>",
        x0 + w / 2.0,
        x0 + pad - 4.0,
        pad + 4.0,
        x0 + pad - 4.0,
        h - pad,
        x0 + w / 2.0,
        h - 10.0
    );
    for (t, values) in series.iter().enumerate() {
        let pts: Vec<String> = values.iter().enumerate().map(|(i, &v)| format!("{:.1},{:.1}", px(i), py(v))).collect();
        s += &format!(
            "<polyline fill='none' stroke='{}' stroke-width='2' points='{}'/>",
            COLORS[t % COLORS.len()],
            pts.join(" ")
        );
        for p in &pts {
            let (cx, cy) = p.split_once(',').expect("x,y");
            s += &format!("<circle cx='{cx}' cy='{cy}' r='3' fill='{}'/>", COLORS[t % COLORS.len()]);
        }
        s += &format!(
            "<text x='{}' y='{}' font-size='11' fill='{}'>task {}</text>",
            x0 + w - 70.0,
            40.0 + 14.0 * t as f64,
            COLORS[t % COLORS.len()],
            t + 1
        );
    }
    s
}

pub fn curves_svg(history: &[EpochMetrics]) -> String {
    let n = history.first().map_or(0, |m| m.test.len());
    let loss = (0..n).map(|t| history.iter().map(|m| m.train_loss[t]).collect()).collect();
    let acc = (0..n).map(|t| history.iter().map(|m| headline(&m.test[t]).1).collect()).collect();
    let names: Vec<String> =
        (0..n).map(|t| history.first().map(|m| headline(&m.test[t]).0).unwrap_or_default()).collect();
    format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='740' height='240' font-family='sans-serif'>{}{}</svg>\n",
        panel(0.0, "train loss", loss),
        panel(380.0, &format!("test {}", names.join(" / ")), acc)
    )
}
