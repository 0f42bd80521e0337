//! One row per figure: steward next to raw NATS, their ratio, the target and whether it
//! is met; printed as a table and written as JSON.

use serde_json::{json, Value};

/// What a figure has to reach.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// steward / raw at least this.
    RatioAtLeast(f64),
    /// The steward figure below this (in the row's unit).
    Below(f64),
    /// The steward figure at least this (in the row's unit).
    AtLeast(f64),
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Row {
    /// Section of the issue (1-5).
    pub section: u8,
    /// What was measured.
    pub measure: String,
    /// Unit of `steward` and `raw`.
    pub unit: &'static str,
    /// steward's figure, `None` if it could not be measured (see `note`).
    pub steward: Option<f64>,
    /// The same work with raw async-nats, if there is such a thing.
    pub raw: Option<f64>,
    /// The target, if it sets one.
    pub target: Option<Target>,
    /// Anything the figure needs to be read right.
    pub note: String,
}

impl Row {
    /// A row without a target or note.
    pub fn new(
        section: u8,
        measure: impl Into<String>,
        unit: &'static str,
        steward: Option<f64>,
        raw: Option<f64>,
    ) -> Row {
        Row {
            section,
            measure: measure.into(),
            unit,
            steward,
            raw,
            target: None,
            note: String::new(),
        }
    }

    /// Sets the target.
    pub fn target(mut self, t: Target) -> Row {
        self.target = Some(t);
        self
    }

    /// Sets the note.
    pub fn note(mut self, n: impl Into<String>) -> Row {
        self.note = n.into();
        self
    }

    /// steward / raw.
    pub fn ratio(&self) -> Option<f64> {
        match (self.steward, self.raw) {
            (Some(s), Some(r)) if r > 0.0 => Some(s / r),
            _ => None,
        }
    }

    /// Whether the target is met (`None`: no target, or no figure).
    pub fn met(&self) -> Option<bool> {
        let s = self.steward?;
        match self.target? {
            Target::RatioAtLeast(x) => self.ratio().map(|r| r >= x),
            Target::Below(x) => Some(s < x),
            Target::AtLeast(x) => Some(s >= x),
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            None => "-".into(),
            Some(Target::RatioAtLeast(x)) => format!("ratio >= {x:.2}"),
            Some(Target::Below(x)) => format!("< {} {}", fmt_num(x), self.unit),
            Some(Target::AtLeast(x)) => format!(">= {} {}", fmt_num(x), self.unit),
        }
    }
}

/// A figure with sensible precision.
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn cell(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{} {unit}", fmt_num(v)))
}

/// The table as text.
pub fn table(rows: &[Row]) -> String {
    let header = ["measure", "steward", "raw NATS", "ratio", "target", "met?"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                format!("{}. {}", r.section, r.measure),
                cell(r.steward, r.unit),
                cell(r.raw, r.unit),
                r.ratio().map_or_else(|| "-".into(), |x| format!("{x:.3}")),
                r.target_text(),
                match r.met() {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = String::new();
        for (i, (v, w)) in c.iter().zip(width).enumerate() {
            let pad = w - v.chars().count();
            if i == 0 || i >= 4 {
                s.push_str(v);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(v);
            }
            s.push_str("  ");
        }
        s.trim_end().to_owned()
    };
    let mut out = line(&header.map(str::to_owned));
    out.push('\n');
    out.push_str(&"-".repeat(width.iter().sum::<usize>() + 10));
    out.push('\n');
    for c in &cells {
        out.push_str(&line(c));
        out.push('\n');
    }
    let notes: Vec<String> = rows
        .iter()
        .filter(|r| !r.note.is_empty())
        .map(|r| format!("  {}. {}: {}", r.section, r.measure, r.note))
        .collect();
    if !notes.is_empty() {
        out.push_str("notes:\n");
        out.push_str(&notes.join("\n"));
        out.push('\n');
    }
    out
}

/// The rows as JSON values.
pub fn json_rows(rows: &[Row]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "section": r.section,
                    "measure": r.measure,
                    "unit": r.unit,
                    "steward": r.steward,
                    "raw_nats": r.raw,
                    "ratio": r.ratio(),
                    "target": r.target_text(),
                    "met": r.met(),
                    "note": r.note,
                })
            })
            .collect(),
    )
}
