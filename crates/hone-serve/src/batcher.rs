//! Dynamic batching: requests queue for their model's worker thread, which takes as many
//! as fit in one forward pass (up to a count of inputs and a count of tokens), waiting at
//! most `max_wait` for more, and answers each from its share of the outputs.
//!
//! The worker is a plain thread, off the async runtime: a forward pass blocks for
//! milliseconds to seconds, and the pipelines parallelise it on hone's own thread pool.
//! A panic in a forward pass fails that batch's requests (500) and the worker goes on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, RecvTimeoutError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// How a worker forms batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Inputs per forward pass at most (a request larger than this runs alone).
    pub max_inputs: usize,
    /// Tokens per forward pass at most (as above).
    pub max_tokens: usize,
    /// How long the worker waits for more requests once it has one (0: it takes what is
    /// queued already, which is what fills batches under load).
    pub max_wait: Duration,
}

struct Job<I, O> {
    items: Vec<I>,
    tokens: usize,
    reply: oneshot::Sender<Result<Vec<O>, ApiError>>,
}

/// The queue of one model's worker.
pub struct Batcher<I, O> {
    queue: mpsc::SyncSender<Job<I, O>>,
    model: String,
    metrics: Arc<Metrics>,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Start the worker of `model`: `run` maps a batch of inputs to as many outputs, in
    /// order. The queue holds `capacity` requests (the server's in-flight limit).
    pub fn spawn(
        model: &str,
        limits: BatchLimits,
        capacity: usize,
        metrics: Arc<Metrics>,
        run: impl FnMut(Vec<I>) -> anyhow::Result<Vec<O>> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (queue, rx) = mpsc::sync_channel(capacity.max(1));
        let worker = Worker {
            rx,
            limits,
            model: model.to_string(),
            metrics: metrics.clone(),
            carried: None,
        };
        std::thread::Builder::new()
            .name(format!("hone-worker-{model}"))
            .spawn(move || worker.run(run))?;
        Ok(Self {
            queue,
            model: model.to_string(),
            metrics,
        })
    }

    /// Queue `items` (with `tokens` input tokens in all) and wait for their outputs.
    pub async fn submit(&self, items: Vec<I>, tokens: usize) -> Result<Vec<O>, ApiError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            items,
            tokens,
            reply,
        };
        // Counted before it is sent, so the worker's decrement never comes first.
        let depth = self.metrics.queue_depth.with_label_values(&[&self.model]);
        depth.inc();
        if let Err(e) = self.queue.try_send(job) {
            depth.dec();
            return Err(match e {
                TrySendError::Full(_) => ApiError::overloaded(),
                TrySendError::Disconnected(_) => {
                    ApiError::backend(format!("the worker of model `{}` has stopped", self.model))
                }
            });
        }
        answer.await.unwrap_or_else(|_| {
            Err(ApiError::backend(format!(
                "the worker of model `{}` dropped the request",
                self.model
            )))
        })
    }
}

struct Worker<I, O> {
    rx: mpsc::Receiver<Job<I, O>>,
    limits: BatchLimits,
    model: String,
    metrics: Arc<Metrics>,
    /// A job that did not fit in the last batch: it starts the next one.
    carried: Option<Job<I, O>>,
}

impl<I, O> Worker<I, O> {
    fn run(mut self, mut forward: impl FnMut(Vec<I>) -> anyhow::Result<Vec<O>>) {
        while let Some(jobs) = self.next_batch() {
            self.metrics
                .queue_depth
                .with_label_values(&[&self.model])
                .sub(jobs.len() as i64);
            // A client that gave up (timed out, disconnected) costs no forward pass.
            let jobs: Vec<_> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
            if jobs.is_empty() {
                continue;
            }
            let counts: Vec<usize> = jobs.iter().map(|j| j.items.len()).collect();
            let total: usize = counts.iter().sum();
            self.metrics
                .batch_size
                .with_label_values(&[&self.model])
                .observe(total as f64);
            self.metrics
                .batch_tokens
                .with_label_values(&[&self.model])
                .observe(jobs.iter().map(|j| j.tokens).sum::<usize>() as f64);
            let mut replies = Vec::with_capacity(jobs.len());
            let mut items = Vec::with_capacity(total);
            for job in jobs {
                replies.push(job.reply);
                items.extend(job.items);
            }
            let outcome = catch_unwind(AssertUnwindSafe(|| forward(items)));
            let outputs = match outcome {
                Ok(Ok(outputs)) if outputs.len() == total => Ok(outputs),
                Ok(Ok(outputs)) => Err(ApiError::backend(format!(
                    "model `{}` gave {} outputs for {total} inputs",
                    self.model,
                    outputs.len()
                ))),
                Ok(Err(e)) => Err(ApiError::backend(format!("{e:#}"))),
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".to_string());
                    tracing::error!("the worker of model `{}` panicked: {what}", self.model);
                    Err(ApiError::backend(format!(
                        "model `{}` failed on this batch: {what}",
                        self.model
                    )))
                }
            };
            match outputs {
                Ok(outputs) => {
                    let mut outputs = outputs.into_iter();
                    for (reply, n) in replies.into_iter().zip(counts) {
                        // A client gone since is no error of ours.
                        let _ = reply.send(Ok(outputs.by_ref().take(n).collect()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// The next batch: the carried-over job or the first to arrive, then whatever else
    /// fits before `max_wait` runs out. `None` once every sender is gone.
    fn next_batch(&mut self) -> Option<Vec<Job<I, O>>> {
        let first = match self.carried.take() {
            Some(job) => job,
            None => self.rx.recv().ok()?,
        };
        let (mut inputs, mut tokens) = (first.items.len(), first.tokens);
        let mut jobs = vec![first];
        let deadline = Instant::now() + self.limits.max_wait;
        while inputs < self.limits.max_inputs && tokens < self.limits.max_tokens {
            let wait = deadline.saturating_duration_since(Instant::now());
            let next = if wait.is_zero() {
                self.rx.try_recv().map_err(|_| RecvTimeoutError::Timeout)
            } else {
                self.rx.recv_timeout(wait)
            };
            let Ok(job) = next else { break };
            if inputs + job.items.len() > self.limits.max_inputs
                || tokens + job.tokens > self.limits.max_tokens
            {
                self.carried = Some(job);
                break;
            }
            inputs += job.items.len();
            tokens += job.tokens;
            jobs.push(job);
        }
        Some(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_inputs: usize, max_wait_ms: u64) -> BatchLimits {
        BatchLimits {
            max_inputs,
            max_tokens: 1 << 20,
            max_wait: Duration::from_millis(max_wait_ms),
        }
    }

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_get_their_own_outputs() {
        let metrics = Arc::new(Metrics::new());
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let b = Arc::new(
            Batcher::spawn("double", limits(8, 50), 64, metrics, move |xs: Vec<u32>| {
                seen.lock().unwrap().push(xs.len());
                Ok(xs.into_iter().map(|x| 2 * x).collect())
            })
            .unwrap(),
        );
        let tasks: Vec<_> = (0..16u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { (i, b.submit(vec![i, 100 + i], 2).await.unwrap()) })
            })
            .collect();
        for t in tasks {
            let (i, out) = t.await.unwrap();
            assert_eq!(out, vec![2 * i, 200 + 2 * i]);
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 32);
        assert!(sizes.iter().all(|&s| s <= 8), "{sizes:?}");
        assert!(
            sizes.iter().any(|&s| s > 2),
            "no batch was shared: {sizes:?}"
        );
    }

    #[tokio::test]
    async fn a_panic_fails_its_batch_and_the_worker_goes_on() {
        let metrics = Arc::new(Metrics::new());
        let b = Batcher::spawn("fragile", limits(1, 0), 4, metrics, |xs: Vec<i32>| {
            assert!(xs[0] >= 0, "negative input");
            Ok(xs)
        })
        .unwrap();
        let err = b.submit(vec![-1], 1).await.unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        assert!(err.message.contains("negative input"), "{}", err.message);
        assert_eq!(b.submit(vec![7], 1).await.unwrap(), vec![7]);
    }
}
