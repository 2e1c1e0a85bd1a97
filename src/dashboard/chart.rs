//! Line charts as plain SVG, drawn on the server: geometry here, markup in `chart.html` (so
//! every label is escaped by the template like any other text).

use std::fmt::Write as _;

/// Series colours, in order.
const COLORS: [&str; 8] = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

/// The SVG's size and the plot area's margins (px).
const WIDTH: u32 = 560;
const HEIGHT: u32 = 200;
const LEFT: u32 = 56;
const RIGHT: u32 = 22;
const TOP: u32 = 10;
const BOTTOM: u32 = 24;

/// One line.
pub struct Line {
    /// Legend text.
    pub name: String,
    /// Stroke colour.
    pub color: &'static str,
    /// `x,y x,y …` (numbers only).
    pub points: String,
}

/// An axis label.
pub struct Tick {
    /// Position (px) along the axis.
    pub at: String,
    /// Text.
    pub label: String,
}

/// A chart ready for `chart.html`.
pub struct Chart {
    /// Title above it.
    pub title: String,
    /// SVG width and height.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Plot area's left, right, top and bottom edges (px).
    pub left: u32,
    /// Right edge.
    pub right: u32,
    /// Bottom edge.
    pub bottom: u32,
    /// The lines.
    pub lines: Vec<Line>,
    /// Horizontal grid lines and their values.
    pub y_ticks: Vec<Tick>,
    /// Time labels.
    pub x_ticks: Vec<Tick>,
    /// Nothing to draw.
    pub empty: bool,
}

fn px(v: f64) -> String {
    format!("{v:.1}")
}

/// A "nice" upper bound for an axis: 1, 2 or 5 × 10ⁿ at or above `max`.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let exp = max.log10().floor();
    let base = 10f64.powf(exp);
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * base >= max {
            return m * base;
        }
    }
    10.0 * base
}

/// A value for an axis label.
fn short(v: f64, unit: &str) -> String {
    let (n, suffix) = if v.abs() >= 1e9 {
        (v / 1e9, "G")
    } else if v.abs() >= 1e6 {
        (v / 1e6, "M")
    } else if v.abs() >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let mut s = if n.fract() == 0.0 {
        format!("{n:.0}")
    } else if n.abs() < 0.01 {
        format!("{n:.4}")
    } else {
        format!("{n:.2}")
    };
    s.push_str(suffix);
    match unit {
        "$" => format!("${s}"),
        "" => s,
        u => format!("{s} {u}"),
    }
}

/// A chart of `series` (name, one value per bucket) over `buckets` (ms), labelled hourly
/// (`hourly`) or daily.
pub fn line_chart(title: &str, unit: &str, buckets: &[i64], hourly: bool, series: Vec<(String, Vec<f64>)>) -> Chart {
    let max = series.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0_f64, f64::max);
    let top_value = nice_max(max);
    let n = buckets.len().max(1);
    let plot_w = f64::from(WIDTH - LEFT - RIGHT);
    let plot_h = f64::from(HEIGHT - TOP - BOTTOM);
    let step = if n > 1 { plot_w / f64::from(u32::try_from(n - 1).unwrap_or(u32::MAX)) } else { 0.0 };
    let x = |i: usize| f64::from(LEFT) + step * f64::from(u32::try_from(i).unwrap_or(u32::MAX));
    let y = |v: f64| f64::from(TOP) + plot_h - (v / top_value).clamp(0.0, 1.0) * plot_h;
    let lines = series
        .into_iter()
        .enumerate()
        .map(|(k, (name, values))| {
            let mut points = String::new();
            for (i, v) in values.iter().enumerate() {
                let _ = write!(points, "{},{} ", px(x(i)), px(y(*v)));
            }
            Line { name, color: COLORS.get(k % COLORS.len()).copied().unwrap_or("#000"), points }
        })
        .collect();
    let y_ticks = (0..=4)
        .map(|i| {
            let v = top_value * f64::from(i) / 4.0;
            Tick { at: px(y(v)), label: short(v, unit) }
        })
        .collect();
    let every = (n / 6).max(1);
    let x_ticks = buckets
        .iter()
        .enumerate()
        .filter(|(i, _)| i.is_multiple_of(every))
        .map(|(i, b)| {
            let label = chrono::DateTime::from_timestamp_millis(*b).map_or_else(String::new, |d| {
                if hourly { d.format("%H:%M").to_string() } else { d.format("%m-%d").to_string() }
            });
            Tick { at: px(x(i)), label }
        })
        .collect();
    Chart {
        title: title.to_owned(),
        width: WIDTH,
        height: HEIGHT,
        left: LEFT,
        right: WIDTH - RIGHT,
        bottom: HEIGHT - BOTTOM,
        lines,
        y_ticks,
        x_ticks,
        empty: max <= 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_bounds_and_points() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(0.03), 0.05);
        assert_eq!(short(1500.0, ""), "1.50k");
        assert_eq!(short(2.0, "$"), "$2");
        let c = line_chart("t", "ms", &[0, 3_600_000, 7_200_000], true, vec![("a".into(), vec![0.0, 5.0, 10.0])]);
        assert!(!c.empty);
        assert_eq!(c.lines[0].points.split(' ').filter(|p| !p.is_empty()).count(), 3);
        // Only digits, dots, commas and spaces: nothing a label could smuggle in.
        assert!(c.lines[0].points.chars().all(|ch| ch.is_ascii_digit() || ".,- ".contains(ch)));
        assert_eq!(c.x_ticks[0].label, "00:00");
    }
}
