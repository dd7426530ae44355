//! Trainer for the CIFAR-10 tutorial model on tch (libtorch).
//!
//! - [`model`]: the network, its variables named as in the weights file;
//! - [`layers`]: the layers as tch operations (SAME pooling, TensorFlow LRN);
//! - [`distort`], [`inputs`]: the distorted training inputs, made ahead on worker threads;
//!   [`augment`]: the same distortions as batched ops on the device;
//! - [`config`]: a run's settings, their checks, and the [`config::Schedule`] a resume must share;
//! - [`memory`]: whether the batches fit in memory, checked up front;
//! - [`schedule`], [`ema`]: the learning rate and the weights' moving average;
//! - [`towers`]: data-parallel replicas, each reading its own batch on its own long-lived
//!   thread, gradients averaged; [`flat`]: the one-buffer weights and gradients they share;
//! - [`cudnn`]: the deterministic-cuDNN switch;
//! - [`trainer`]: the training loop, with [`progress`] lines and [`tensorboard`] summaries;
//! - [`checkpoint`]: resumable, atomic checkpoints;
//! - [`summary`]: TensorBoard event files;
//! - [`evaluate`], [`export`]: precision@1 on the test set, weights files from checkpoints;
//! - [`seeding`]: the seeded random streams behind the input order and distortions (the
//!   initial weights come from [`model_format::init`]);
//! - [`error`]: the error type, [`TrainError`].

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod cudnn;
pub mod distort;
pub mod ema;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod flat;
pub mod inputs;
pub mod layers;
pub mod memory;
pub mod model;
pub mod progress;
pub mod schedule;
pub mod seeding;
pub mod summary;
pub mod tensorboard;
pub mod towers;
pub mod trainer;

pub use error::TrainError;
pub use model::Net;
