//! The human-readable report: one block per layer, one line per check, and the numbers as a
//! table of metric, value and bound.

use std::fmt::Write;

use super::{Status, VerifyReport};

pub fn text(r: &VerifyReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "verify {}", r.file.display());
    let mut facts = Vec::new();
    if let Some(a) = &r.architecture {
        facts.push(format!("architecture {a}"));
    }
    if let Some(t) = &r.file_type {
        facts.push(format!("file type {t}"));
    }
    if !facts.is_empty() {
        let _ = writeln!(s, "{}", facts.join(", "));
    }
    for layer in &r.layers {
        let _ = writeln!(
            s,
            "\n{:<10} {}",
            layer.name.to_uppercase(),
            layer.status.label()
        );
        let metric_rows = layer.numbers.as_ref().map(|n| n.rows()).unwrap_or_default();
        let width = layer
            .checks
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0)
            .min(24);
        for c in &layer.checks {
            if metric_rows.iter().any(|(name, ..)| *name == c.name) {
                continue;
            }
            let _ = writeln!(
                s,
                "  {:<5} {:<width$}  {}",
                c.status.label(),
                c.name,
                c.detail
            );
        }
        if let Some(n) = &layer.numbers {
            let _ = writeln!(s, "  {:<17} {:>12}  {:<22} ", "metric", "value", "bound");
            for (name, value, bound, higher_better) in &metric_rows {
                let status = layer
                    .checks
                    .iter()
                    .find(|c| c.name == *name)
                    .map(|c| c.status)
                    .unwrap_or(Status::Skip);
                let (v, b) = if *name == "top-1 agreement" {
                    let shown = bound.map(|b| {
                        if b < 1.0 && n.n_positions > 0 {
                            // The bound less the sampling slack, as the check applies it.
                            let eff = super::thresholds::top1_required_matches(n.n_positions, b)
                                / n.n_positions as f64;
                            format!("≥ {:.2}% ({:.0}% − 2σ)", 100.0 * eff, 100.0 * b)
                        } else {
                            format!("≥ {:.2}%", 100.0 * b)
                        }
                    });
                    (format!("{:.2}%", 100.0 * value), shown)
                } else {
                    (
                        format!("{value:.3e}"),
                        bound
                            .map(|b| format!("{} {b:.1e}", if *higher_better { "≥" } else { "≤" })),
                    )
                };
                let mark = if bound.is_some() { status.label() } else { "" };
                let _ = writeln!(
                    s,
                    "  {:<17} {:>12}  {:<22} {}",
                    name,
                    v,
                    b.unwrap_or_else(|| "-".into()),
                    mark
                );
            }
            let _ = writeln!(
                s,
                "  ({} positions, {} prompts; max KLD {:.3e}, worst-position NMSE {:.3e}; bounds: {})",
                n.n_positions, n.n_prompts, n.max_kld, n.max_position_nmse, n.thresholds.source
            );
        }
    }
    let verdict = match r.verdict {
        Status::Fail => "FAIL",
        Status::Error => "INCONCLUSIVE (a layer could not run)",
        Status::Warn => "PASS with findings",
        Status::Pass | Status::Skip => "PASS",
    };
    let _ = writeln!(s, "\nverdict: {verdict} (exit {})", r.exit_code);
    s
}
