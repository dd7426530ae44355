//! JUnit XML, the test-report format GitHub, GitLab and Jenkins all show: one test suite
//! named after the model, one test case per gate (a failure when the gate failed) and one per
//! class (its accuracy, and against the baseline when there is one).

use std::fmt::Write as _;

use infer::evaluation::accuracy;

use super::Report;

/// The report as a JUnit XML document.
pub fn render(report: &Report) -> String {
    let mut cases = String::new();
    let mut failures = 0;
    for gate in report.gates {
        let name = format!("gate {}", gate.gate);
        let failure = (!gate.passed).then(|| {
            failures += 1;
            gate.detail.as_str()
        });
        case(&mut cases, "precision.gates", &name, &gate.detail, failure);
    }
    for (class, name) in report.class_names.iter().enumerate() {
        let (correct, total) = report.result.class_counts(class);
        let mut detail = format!("{correct}/{total} right ({:.4})", accuracy(correct, total));
        if let Some(change) = report.baseline {
            let (old, _, _) = change.per_class[class];
            let _ = write!(detail, "; baseline {old}/{total} ({:.4})", accuracy(old, total));
        }
        case(&mut cases, "precision.classes", &format!("class {name}"), &detail, None);
    }
    let tests = report.gates.len() + report.class_names.len();
    let suite = escape(&report.model_name);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"cifar10 eval\" tests=\"{tests}\" failures=\"{failures}\">\n  \
         <testsuite name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">\n{cases}  </testsuite>\n</testsuites>\n"
    )
}

fn case(out: &mut String, class: &str, name: &str, detail: &str, failure: Option<&str>) {
    let (name, detail) = (escape(name), escape(detail));
    let _ = write!(out, "    <testcase classname=\"{class}\" name=\"{name}\">");
    match failure {
        Some(message) => {
            let _ = write!(out, "<failure message=\"{}\">{detail}</failure>", escape(message));
        }
        None => {
            let _ = write!(out, "<system-out>{detail}</system-out>");
        }
    }
    out.push_str("</testcase>\n");
}

/// XML text and attribute escaping; control characters XML 1.0 cannot hold become spaces.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_control_characters_are_escaped() {
        assert_eq!(escape("a<b & \"c\" 'd'>\u{1}"), "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt; ");
    }
}
