//! Exporters: a trained model in formats other runtimes read. Each layer and head writes
//! its own twin of `forward` into a graph (`onnx`, beside `forward`, on [`crate::onnx`]);
//! this room checks a request and writes the file.

pub mod onnx;
