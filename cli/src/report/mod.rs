//! The reports `cifar10 eval` writes for CI systems: JUnit XML ([`junit`]) and a Markdown
//! summary ([`summary`]), both from one [`Report`].

pub mod junit;
pub mod summary;

use std::path::Path;

use infer::evaluation::{Comparison, Evaluation, GateResult};

/// Everything one evaluation found, as the reports show it.
pub struct Report<'a> {
    /// The model's file name.
    pub model_name: String,
    /// Where the images came from, in words.
    pub data: String,
    /// `Some(n)` when only a class-balanced subset of `n` images was evaluated.
    pub subset: Option<usize>,
    /// The backend whose counts are reported (the first of `--backend`).
    pub backend: &'a str,
    pub result: &'a Evaluation,
    pub class_names: &'a [String],
    /// The baseline model's file name and the comparison with it.
    pub baseline: Option<&'a Comparison>,
    pub baseline_name: Option<String>,
    /// Each further backend against the first.
    pub backends: &'a [(String, Comparison)],
    pub gates: &'a [GateResult],
    /// The chart drawn by `--plot`, linked from the summary.
    pub plot: Option<&'a Path>,
}

impl Report<'_> {
    /// Whether every gate passed (true when none was set).
    pub fn passed(&self) -> bool {
        self.gates.iter().all(|g| g.passed)
    }
}
