//! Gates a CI pipeline puts on an evaluation: an absolute floor, an exact count, a largest
//! drop against a baseline model, "not significantly worse" than the baseline, and agreement
//! between backends. Each gate is off unless set; each checked gate gives one [`GateResult`].

use super::{Comparison, Evaluation};

/// The thresholds; `None` leaves a gate off.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gates {
    /// Fail when precision@1 is below this (0–1).
    pub min_precision: Option<f64>,
    /// Fail unless exactly this many images are right.
    pub expect_correct: Option<usize>,
    /// Fail when precision@1 fell by more than this (absolute, 0–1) against the baseline.
    pub max_drop: Option<f64>,
    /// Fail when the candidate is worse than the baseline and McNemar's exact test gives a
    /// p-value below this (0–1, e.g. 0.05): worse beyond noise.
    pub significance: Option<f64>,
    /// Fail when another backend's predictions differ from the first's on more images.
    pub max_disagreements: Option<usize>,
}

/// One gate's outcome, with a sentence saying what was measured against what.
#[derive(Debug, Clone, PartialEq)]
pub struct GateResult {
    /// The gate's flag name, e.g. `min-precision`.
    pub gate: String,
    pub passed: bool,
    pub detail: String,
}

impl Gates {
    /// Whether any gate is set.
    pub fn any(&self) -> bool {
        *self != Gates::default()
    }

    /// Checks every gate that is set. `baseline` is the comparison with the baseline model
    /// (needed by `max_drop` and `significance`); `backends` the comparison of each further
    /// backend with the first, by name (needed by `max_disagreements`).
    ///
    /// ```
    /// use infer::evaluation::{Evaluation, Gates};
    /// let result = Evaluation::from_predictions(vec![0, 1, 2, 3], vec![0, 1, 2, 0])?;
    /// let gates = Gates { min_precision: Some(0.8), expect_correct: Some(3), ..Gates::default() };
    /// let outcome = gates.check(&result, None, &[]);
    /// assert_eq!(outcome.iter().map(|g| g.passed).collect::<Vec<_>>(), [false, true]);
    /// # Ok::<(), infer::InferError>(())
    /// ```
    pub fn check(
        &self,
        result: &Evaluation,
        baseline: Option<&Comparison>,
        backends: &[(String, Comparison)],
    ) -> Vec<GateResult> {
        let mut out = Vec::new();
        let precision = result.precision_at_1();
        if let Some(floor) = self.min_precision {
            let passed = precision >= floor;
            let by = if passed { String::new() } else { format!(", {:.4} short", floor - precision) };
            out.push(gate("min-precision", passed, format!("precision@1 {precision:.4}, floor {floor:.4}{by}")));
        }
        if let Some(expected) = self.expect_correct {
            let correct = result.correct();
            let detail = format!("{correct}/{} right, expected exactly {expected}", result.total());
            out.push(gate("expect-correct", correct == expected, detail));
        }
        if let (Some(max), Some(change)) = (self.max_drop, baseline) {
            let drop = -change.precision_change();
            let detail = format!(
                "precision@1 changed by {:+.4} against the baseline ({} right→wrong, {} wrong→right), largest drop allowed {max:.4}",
                -drop, change.right_to_wrong, change.wrong_to_right
            );
            out.push(gate("max-drop", drop <= max + 1e-12, detail));
        }
        if let (Some(alpha), Some(change)) = (self.significance, baseline) {
            let worse = change.right_to_wrong > change.wrong_to_right;
            let passed = !(worse && change.p_value < alpha);
            let detail = format!(
                "{} right→wrong against {} wrong→right: McNemar exact p = {:.4} ({} at α = {alpha})",
                change.right_to_wrong,
                change.wrong_to_right,
                change.p_value,
                if passed { "not significantly worse" } else { "significantly worse" }
            );
            out.push(gate("significance", passed, detail));
        }
        if let Some(max) = self.max_disagreements {
            for (name, change) in backends {
                let n = change.disagreements.len();
                let detail = format!("{name} differs from the first backend on {n} images, at most {max} allowed");
                out.push(gate(&format!("max-disagreements ({name})"), n <= max, detail));
            }
        }
        out
    }
}

fn gate(name: &str, passed: bool, detail: String) -> GateResult {
    GateResult { gate: name.to_string(), passed, detail }
}
