//! Trainer (skeleton; being written).
