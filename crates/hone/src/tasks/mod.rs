//! Task pipelines: for each task, its data turned into batches, its loss, its evaluation
//! report and its predictions. The CLI calls these; they call the model.

pub mod classification;
pub mod ner;
pub mod pretrain;
