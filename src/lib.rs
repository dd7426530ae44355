//! Holder of the cross-crate tests (`tests/`) and benchmarks (`benches/`); no code of its own.
