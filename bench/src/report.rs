//! The benchmark's results: a table per scenario on stdout and
//! `target/bench/report.json`.

use std::{fs, path::Path};

use serde_json::{Map, Value, json};

pub struct Row {
    pub scenario: String,
    pub contender: &'static str,
    /// Figures in the order they are printed.
    pub figures: Vec<(&'static str, Value)>,
}

impl Row {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.as_f64())
    }
}

pub struct Target {
    pub name: &'static str,
    pub goal: String,
    pub value: String,
    pub met: bool,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    /// Remarks printed under a scenario's table: (scenario, text).
    pub notes: Vec<(String, String)>,
}

/// Rounds of one contender whose slowest and fastest differ by more than
/// this (relative to the median) are too noisy to rank contenders by.
pub const NOISY_SPREAD: f64 = 0.10;

/// A figure rounded for reading (JSON keeps it as a number).
pub fn num(x: f64, decimals: i32) -> Value {
    let f = 10f64.powi(decimals);
    json!((x * f).round() / f)
}

impl Report {
    pub fn add(&mut self, scenario: &str, contender: &'static str, figures: Vec<(&'static str, Value)>) {
        self.rows.push(Row {
            scenario: scenario.to_owned(),
            contender,
            figures,
        });
    }

    /// A note under `scenario`'s table.
    pub fn note(&mut self, scenario: &str, text: String) {
        self.notes.push((scenario.to_owned(), text));
    }

    /// Notes under `scenario` whether its rounds were steady enough to
    /// compare contenders: `spreads` are each contender's (max - min) /
    /// median.
    pub fn judge_noise(&mut self, scenario: &str, spreads: &[(&str, f64)]) {
        let noisy: Vec<String> = spreads
            .iter()
            .filter(|(_, s)| *s > NOISY_SPREAD)
            .map(|(name, s)| format!("{name} {:.0}%", s * 100.0))
            .collect();
        let text = if noisy.is_empty() {
            format!(
                "Every contender's rounds were within {:.0}% of its median: steady enough to compare.",
                NOISY_SPREAD * 100.0
            )
        } else {
            format!(
                "Too noisy to judge small differences: rounds spread more than {:.0}% of the median for {}.",
                NOISY_SPREAD * 100.0,
                noisy.join(", ")
            )
        };
        self.notes.push((scenario.to_owned(), text));
    }

    pub fn find(&self, scenario: &str, contender: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.contender == contender)
    }

    /// The tables, scenario by scenario, then the targets.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut scenarios: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !scenarios.contains(&r.scenario.as_str()) {
                scenarios.push(&r.scenario);
            }
        }
        for scenario in scenarios {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.scenario == scenario).collect();
            let mut columns: Vec<&str> = Vec::new();
            for r in &rows {
                for (k, _) in &r.figures {
                    if !columns.contains(k) {
                        columns.push(k);
                    }
                }
            }
            out += &format!(
                "\n### {scenario}\n\n| contender | {} |\n|---|{}\n",
                columns.join(" | "),
                "---|".repeat(columns.len())
            );
            for r in rows {
                let cells: Vec<String> = columns
                    .iter()
                    .map(|c| match r.figures.iter().find(|(k, _)| k == c).map(|(_, v)| v) {
                        None | Some(Value::Null) => "n/a".to_owned(),
                        Some(Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                    })
                    .collect();
                out += &format!("| {} | {} |\n", r.contender, cells.join(" | "));
            }
            for (_, note) in self.notes.iter().filter(|(s, _)| s == scenario) {
                out += &format!("\n{note}\n");
            }
        }
        out += "\n### Targets\n\n| target | goal | measured | met |\n|---|---|---|---|\n";
        for t in &self.targets {
            out += &format!(
                "| {} | {} | {} | {} |\n",
                t.name,
                t.goal,
                t.value,
                if t.met { "yes" } else { "**no**" }
            );
        }
        out
    }

    pub fn write_json(&self, path: &Path, machine: Value) -> std::io::Result<()> {
        let results: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("scenario".into(), json!(r.scenario));
                m.insert("contender".into(), json!(r.contender));
                for (k, v) in &r.figures {
                    m.insert((*k).into(), v.clone());
                }
                Value::Object(m)
            })
            .collect();
        let targets: Vec<Value> = self
            .targets
            .iter()
            .map(|t| json!({"target": t.name, "goal": t.goal, "measured": t.value, "met": t.met}))
            .collect();
        let notes: Vec<Value> = self
            .notes
            .iter()
            .map(|(scenario, note)| json!({"scenario": scenario, "note": note}))
            .collect();
        let doc = json!({"machine": machine, "results": results, "targets": targets, "notes": notes});
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
    }
}
