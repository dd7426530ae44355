//! The Markdown summary: a verdict line, the gates, the comparison with the baseline and
//! between backends, and the confusion matrix as a table (a chart drawn by `--plot` is
//! linked), for `$GITHUB_STEP_SUMMARY` or a merge-request comment.

use std::fmt::Write as _;

use super::Report;

/// The report as Markdown.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = write_all(report, &mut out);
    out
}

fn write_all(r: &Report, out: &mut String) -> std::fmt::Result {
    let verdict = if r.gates.is_empty() {
        "evaluated"
    } else if r.passed() {
        "passed"
    } else {
        "FAILED"
    };
    writeln!(out, "## cifar10 eval: `{}` {verdict}\n", r.model_name)?;
    writeln!(
        out,
        "precision@1 **{:.4}** ({}/{}) on {}, backend `{}`.",
        r.result.precision_at_1(),
        r.result.correct(),
        r.result.total(),
        r.data,
        r.backend
    )?;
    if let Some(n) = r.subset {
        writeln!(
            out,
            "\nA quick check: a class-balanced subset of {n} images (the first {} of each class), not the whole set.",
            n / 10
        )?;
    }
    if !r.gates.is_empty() {
        writeln!(out, "\n| gate | result | measured |\n|---|---|---|")?;
        for gate in r.gates {
            let result = if gate.passed { "passed" } else { "**failed**" };
            writeln!(out, "| {} | {result} | {} |", gate.gate, cell(&gate.detail))?;
        }
    }
    if let (Some(change), Some(name)) = (r.baseline, &r.baseline_name) {
        write_baseline(r, change, name, out)?;
    }
    if !r.backends.is_empty() {
        writeln!(out, "\n### Backends\n\n| backend | images predicted differently from `{}` |\n|---|---|", r.backend)?;
        for (name, change) in r.backends {
            writeln!(out, "| {name} | {} |", change.disagreements.len())?;
        }
    }
    write_confusion(r, out)
}

fn write_baseline(
    r: &Report,
    change: &infer::evaluation::Comparison,
    name: &str,
    out: &mut String,
) -> std::fmt::Result {
    let old = r.result.precision_at_1() - change.precision_change();
    writeln!(out, "\n### Against the baseline `{name}`\n")?;
    writeln!(
        out,
        "precision@1 {old:.4} → {:.4} ({:+.4}); {} images right→wrong, {} wrong→right; McNemar exact p = {:.4}.\n",
        r.result.precision_at_1(),
        change.precision_change(),
        change.right_to_wrong,
        change.wrong_to_right,
        change.p_value
    )?;
    writeln!(out, "| class | baseline | new | change |\n|---|---|---|---|")?;
    for (class, label) in r.class_names.iter().enumerate() {
        let (old, new, total) = change.per_class[class];
        writeln!(out, "| {label} | {old}/{total} | {new}/{total} | {:+} |", new as i64 - old as i64)?;
    }
    Ok(())
}

fn write_confusion(r: &Report, out: &mut String) -> std::fmt::Result {
    writeln!(out, "\n### Confusion matrix (rows: true class, columns: predicted)\n")?;
    write!(out, "| |")?;
    for name in r.class_names {
        write!(out, " {name} |")?;
    }
    write!(out, "\n|---|")?;
    for _ in r.class_names {
        write!(out, "---|")?;
    }
    writeln!(out)?;
    for (name, row) in r.class_names.iter().zip(&r.result.confusion) {
        write!(out, "| **{name}** |")?;
        for count in row {
            write!(out, " {count} |")?;
        }
        writeln!(out)?;
    }
    if let Some(plot) = r.plot {
        writeln!(out, "\n![confusion matrix]({})", plot.display())?;
    }
    Ok(())
}

/// Text safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
