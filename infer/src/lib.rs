//! CPU inference (skeleton; being written).
