//! The one training loop of the project and what it is built from: optimizers with
//! restartable state and learning-rate schedules.

pub mod args;
pub mod faults;
pub mod log;
pub mod memory;
pub mod optim;
pub mod precision;
pub mod schedule;
pub mod trainer;

pub use args::{EvalStrategy, TrainingArguments};
pub use faults::{FaultSite, InjectedFault};
pub use optim::OptimizerKind;
pub use precision::{GradScaler, Precision};
pub use trainer::{
    LogRecord, Metrics, Run, TrainOutput, Trainer, TrainerCallback, TrainerState, TrainingData,
    UpdateStats,
};
