//! The one training loop of the project and what it is built from: optimizers with
//! restartable state and learning-rate schedules.

pub mod args;
pub mod log;
pub mod optim;
pub mod precision;
pub mod schedule;
pub mod trainer;

pub use args::{EvalStrategy, OptimizerKind, TrainingArguments};
pub use precision::{GradScaler, Precision};
pub use trainer::{TrainOutput, Trainer, TrainerState, TrainingTask};
