//! The result table (Markdown, so it can be pasted into docs/benchmarks.md as is).

#[derive(Clone, Debug, Default)]
pub struct Row {
    pub section: &'static str,
    pub figure: String,
    pub namegate: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    pub met: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

pub fn yes_no(ok: bool) -> String {
    if ok { "yes".into() } else { "**no**".into() }
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn row(
        &mut self,
        section: &'static str,
        figure: impl Into<String>,
        namegate: impl Into<String>,
        baseline: impl Into<String>,
        ratio: impl Into<String>,
        target: impl Into<String>,
        met: impl Into<String>,
    ) {
        let row = Row {
            section,
            figure: figure.into(),
            namegate: namegate.into(),
            baseline: baseline.into(),
            ratio: ratio.into(),
            target: target.into(),
            met: met.into(),
        };
        eprintln!(
            "bench: [{}] {}: {} | {} | {} | {} | {}",
            row.section, row.figure, row.namegate, row.baseline, row.ratio, row.target, row.met
        );
        self.rows.push(row);
    }

    pub fn note(&mut self, text: impl Into<String>) {
        let t = text.into();
        eprintln!("bench: note: {t}");
        self.notes.push(t);
    }

    pub fn render(&self, header: &str) -> String {
        let mut out = String::new();
        out.push_str(header);
        out.push_str("\n\n");
        out.push_str("| § | figure | namegate | baseline | ratio | target | met |\n");
        out.push_str("|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let cell = |s: &str| {
                if s.is_empty() {
                    "—".to_owned()
                } else {
                    s.replace('|', "\\|")
                }
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.section,
                cell(&r.figure),
                cell(&r.namegate),
                cell(&r.baseline),
                cell(&r.ratio),
                cell(&r.target),
                cell(&r.met)
            ));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        out
    }
}

pub fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
}

pub fn pct(ratio: f64) -> String {
    format!("{:.0} %", ratio * 100.0)
}

/// Thousands separator for rates and counts.
pub fn num(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_read_well() {
        assert_eq!(super::num(1234567.4), "1,234,567");
        assert_eq!(super::num(999.0), "999");
        assert_eq!(super::pct(0.7049), "70 %");
    }
}
