//! Figures, their medians and targets, the table and the JSON file.

use serde_json::{Value, json};

/// A target attached to a figure.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// RRQ's median is at least this.
    AtLeast(f64),
    /// RRQ's median is at most this.
    AtMost(f64),
    /// RRQ's median divided by the reference's is at least this.
    RatioAtLeast(f64),
    /// RRQ's median is at most this factor of RRQ's median of another
    /// figure (key, how the table names it, factor).
    AtMostFactorOf(&'static str, &'static str, f64),
}

/// One measured quantity, with every run's value on both sides.
#[derive(Debug)]
pub(crate) struct Figure {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub decimals: usize,
    pub rrq: Vec<f64>,
    pub reference: Vec<f64>,
    pub targets: Vec<Target>,
    /// Why the reference has no value, when it has none by design.
    pub reference_note: Option<&'static str>,
}

pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Nearest-rank percentile (`p` in 0..=100).
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

impl Figure {
    pub(crate) fn new(key: &'static str, label: &'static str, unit: &'static str, decimals: usize) -> Figure {
        Figure {
            key,
            label,
            unit,
            decimals,
            rrq: Vec::new(),
            reference: Vec::new(),
            targets: Vec::new(),
            reference_note: None,
        }
    }

    pub(crate) fn target(mut self, t: Target) -> Figure {
        self.targets.push(t);
        self
    }

    pub(crate) fn reference_note(mut self, note: &'static str) -> Figure {
        self.reference_note = Some(note);
        self
    }

    pub(crate) fn ratio(&self) -> Option<f64> {
        Some(median(&self.rrq)? / median(&self.reference)?)
    }

    fn target_text(t: &Target) -> String {
        match t {
            Target::AtLeast(v) => format!("≥ {}", group(*v, 0)),
            Target::AtMost(v) => format!("≤ {v}"),
            Target::RatioAtLeast(r) => format!("≥ {r}× ref"),
            Target::AtMostFactorOf(_, name, f) => format!("≤ {f}× {name}"),
        }
    }

    /// Whether each target is met (`None`: not measured).
    fn verdicts(&self, all: &[Figure]) -> Vec<(String, Option<bool>)> {
        let rrq = median(&self.rrq);
        self.targets
            .iter()
            .map(|t| {
                let met = match *t {
                    Target::AtLeast(v) => rrq.map(|m| m >= v),
                    Target::AtMost(v) => rrq.map(|m| m <= v),
                    Target::RatioAtLeast(r) => self.ratio().map(|x| x >= r),
                    Target::AtMostFactorOf(other, _, f) => {
                        let o = all.iter().find(|g| g.key == other).and_then(|g| median(&g.rrq));
                        rrq.zip(o).map(|(m, o)| m <= o * f)
                    }
                };
                (Self::target_text(t), met)
            })
            .collect()
    }
}

/// A number with thousands separators and `decimals` digits.
pub(crate) fn group(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "–".to_owned();
    }
    let text = format!("{:.*}", decimals, v.abs());
    let (int, frac) = text.split_once('.').map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// The table of medians, ratios and targets (stdout).
pub(crate) fn table(figures: &[Figure], reps: usize) -> String {
    let mut rows = vec![[
        "figure".to_owned(),
        "unit".to_owned(),
        format!("RRQ (median of {reps})"),
        "reference".to_owned(),
        "RRQ/ref".to_owned(),
        "target".to_owned(),
    ]];
    for f in figures {
        if f.rrq.is_empty() && f.reference.is_empty() {
            continue;
        }
        let show = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |m| group(m, f.decimals));
        let reference = match (median(&f.reference), f.reference_note) {
            (None, Some(note)) => note.to_owned(),
            (m, _) => show(m),
        };
        let ratio =
            f.ratio().map_or_else(|| "–".to_owned(), |r| format!("{}×", group(r, if r < 10.0 { 2 } else { 1 })));
        let targets = f
            .verdicts(figures)
            .into_iter()
            .map(|(text, met)| {
                let mark = match met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "not measured",
                };
                format!("{text} {mark}")
            })
            .collect::<Vec<_>>()
            .join("; ");
        rows.push([f.label.to_owned(), f.unit.to_owned(), show(median(&f.rrq)), reference, ratio, targets]);
    }
    let widths: Vec<usize> = (0..6).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                let pad = widths[c] - cell.chars().count();
                if (2..=4).contains(&c) {
                    format!("{}{cell}", " ".repeat(pad))
                } else {
                    format!("{cell}{}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
        if i == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(c, w)| if (2..=4).contains(&c) { format!("{}:", "-".repeat(*w - 1)) } else { "-".repeat(*w) })
                .collect();
            out.push_str(&format!("| {} |\n", rule.join(" | ")));
        }
    }
    out
}

/// Whether every measured target is met.
pub(crate) fn all_met(figures: &[Figure]) -> bool {
    figures.iter().all(|f| f.verdicts(figures).iter().all(|(_, met)| *met != Some(false)))
}

pub(crate) fn json(figures: &[Figure], meta: Value, runs: &[Value]) -> Value {
    let figures: Vec<Value> = figures
        .iter()
        .map(|f| {
            let verdicts: Vec<Value> =
                f.verdicts(figures).into_iter().map(|(text, met)| json!({"target": text, "met": met})).collect();
            json!({
                "key": f.key,
                "label": f.label,
                "unit": f.unit,
                "rrq": f.rrq,
                "reference": f.reference,
                "rrq_median": median(&f.rrq),
                "reference_median": median(&f.reference),
                "ratio": f.ratio(),
                "targets": verdicts,
            })
        })
        .collect();
    json!({"meta": meta, "figures": figures, "runs": runs})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(group(1234567.891, 1), "1,234,567.9");
        assert_eq!(group(12.0, 0), "12");
    }
}
