//! One JSON line per figure on stdout: ductd's value, each peer's value
//! from the same run, the ratio ductd/peer, and the target with whether it
//! was met. Progress and skipped peers go to stderr.

use serde_json::{json, Map, Value};

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// A bound a figure must meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    pub fn met(self, v: f64) -> bool {
        match self {
            Target::AtLeast(t) => v >= t,
            Target::AtMost(t) => v <= t,
        }
    }

    fn text(self) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {t}"),
            Target::AtMost(t) => format!("<= {t}"),
        }
    }
}

/// One figure of one scenario.
#[derive(Debug, Clone)]
pub struct Figure {
    pub scenario: &'static str,
    pub name: String,
    pub unit: &'static str,
    pub better: Better,
    /// Agent name and value; ductd first.
    pub values: Vec<(String, f64)>,
    pub target: Option<Target>,
    pub notes: Map<String, Value>,
}

impl Figure {
    pub fn new(scenario: &'static str, name: impl Into<String>, unit: &'static str, better: Better) -> Self {
        Figure {
            scenario,
            name: name.into(),
            unit,
            better,
            values: Vec::new(),
            target: None,
            notes: Map::new(),
        }
    }

    pub fn value(mut self, agent: &str, v: f64) -> Self {
        self.values.push((agent.to_string(), v));
        self
    }

    pub fn value_opt(self, agent: &str, v: Option<f64>) -> Self {
        match v {
            Some(v) => self.value(agent, v),
            None => self,
        }
    }

    pub fn target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }

    pub fn note(mut self, key: &str, v: impl Into<Value>) -> Self {
        self.notes.insert(key.to_string(), v.into());
        self
    }

    fn ductd(&self) -> Option<f64> {
        self.values.iter().find(|(a, _)| a == "ductd").map(|(_, v)| *v)
    }

    /// Whether ductd meets the target (`None` without a target or value).
    pub fn met(&self) -> Option<bool> {
        Some(self.target?.met(self.ductd()?))
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("scenario".into(), json!(self.scenario));
        m.insert("figure".into(), json!(self.name));
        m.insert("unit".into(), json!(self.unit));
        m.insert(
            "better".into(),
            json!(match self.better {
                Better::Higher => "higher",
                Better::Lower => "lower",
            }),
        );
        for (agent, v) in &self.values {
            m.insert(agent.clone(), json!(round(*v)));
        }
        if let Some(d) = self.ductd() {
            for (agent, v) in self.values.iter().filter(|(a, _)| a != "ductd") {
                if *v != 0.0 {
                    m.insert(format!("ratio_ductd_over_{agent}"), json!(round(d / v)));
                }
            }
        }
        if let Some(t) = self.target {
            m.insert("target".into(), json!(t.text()));
        }
        if let Some(met) = self.met() {
            m.insert("met".into(), json!(met));
        }
        for (k, v) in &self.notes {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }

    /// Prints the figure as one JSON line.
    pub fn print(&self) {
        println!("{}", self.to_json());
    }
}

/// Four significant digits are plenty for a benchmark figure.
fn round(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let digits = 4 - v.abs().log10().ceil() as i32;
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

/// Percentiles of a sample set (nearest rank); `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_has_ratios_and_its_target() {
        let f = Figure::new("footprint", "rss", "MiB", Better::Lower)
            .value("ductd", 4.0)
            .value("collectd", 5.0)
            .target(Target::AtMost(5.0));
        let v = f.to_json();
        assert_eq!(v["ductd"], 4.0);
        assert_eq!(v["ratio_ductd_over_collectd"], 0.8);
        assert_eq!(v["met"], true);
        assert_eq!(v["target"], "<= 5");
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(50.0));
        assert_eq!(percentile(&s, 99.0), Some(99.0));
        assert_eq!(percentile(&s, 100.0), Some(100.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn rounding_keeps_four_digits() {
        assert_eq!(round(1_234_567.0), 1_235_000.0);
        assert_eq!(round(0.012345), 0.01235);
    }
}
