//! Perplexity of a language model from token negative log-likelihoods (natural log).

use serde::Serialize;

/// `exp(mean_nll)`: perplexity from the mean per-token negative log-likelihood in nats.
pub fn perplexity(mean_nll: f64) -> f64 {
    mean_nll.exp()
}

/// Running sum of token NLLs and token count, so perplexity over a whole evaluation set is
/// the exponential of the *token*-weighted mean (not the mean of per-batch perplexities).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct NllAccumulator {
    /// Sum of NLL over all tokens seen (nats).
    pub sum_nll: f64,
    /// Number of tokens seen.
    pub n_tokens: u64,
    // Neumaier compensation term: long evaluations add many small terms to a large sum.
    #[serde(skip)]
    compensation: f64,
}

impl NllAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    fn add_sum(&mut self, x: f64) {
        let t = self.sum_nll + x;
        if self.sum_nll.abs() >= x.abs() {
            self.compensation += (self.sum_nll - t) + x;
        } else {
            self.compensation += (x - t) + self.sum_nll;
        }
        self.sum_nll = t;
    }

    /// Adds one token's NLL.
    pub fn add_token(&mut self, nll: f64) {
        self.add_sum(nll);
        self.n_tokens += 1;
    }

    /// Adds a batch given as its summed NLL and its token count (e.g. `mean_loss * n_tokens`).
    pub fn add_batch(&mut self, sum_nll: f64, n_tokens: u64) {
        self.add_sum(sum_nll);
        self.n_tokens += n_tokens;
    }

    /// Adds a batch given as its mean NLL over `n_tokens` tokens.
    pub fn add_mean(&mut self, mean_nll: f64, n_tokens: u64) {
        self.add_batch(mean_nll * n_tokens as f64, n_tokens);
    }

    /// Merges another accumulator (e.g. from another worker).
    pub fn merge(&mut self, other: &NllAccumulator) {
        self.add_sum(other.sum_nll);
        self.compensation += other.compensation;
        self.n_tokens += other.n_tokens;
    }

    /// Compensated total NLL.
    pub fn total_nll(&self) -> f64 {
        self.sum_nll + self.compensation
    }

    /// Mean NLL per token; `None` before any token was added.
    pub fn mean_nll(&self) -> Option<f64> {
        (self.n_tokens > 0).then(|| self.total_nll() / self.n_tokens as f64)
    }

    /// Perplexity over everything added; `None` before any token was added.
    pub fn perplexity(&self) -> Option<f64> {
        self.mean_nll().map(perplexity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_distribution_perplexity_is_vocab_size() {
        // A uniform model over 50 symbols has NLL ln(50) per token, so perplexity 50.
        let mut acc = NllAccumulator::new();
        for _ in 0..7 {
            acc.add_token(50f64.ln());
        }
        assert_eq!(acc.n_tokens, 7);
        assert!((acc.perplexity().unwrap() - 50.0).abs() < 1e-10);
        assert!((perplexity(0.0) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn token_weighted_not_batch_weighted() {
        let mut acc = NllAccumulator::new();
        acc.add_mean(1.0, 1); // 1 token with NLL 1
        acc.add_mean(3.0, 3); // 3 tokens with NLL 3 each
        assert!((acc.mean_nll().unwrap() - 2.5).abs() < 1e-15);
        let mut other = NllAccumulator::new();
        other.add_batch(2.0, 4);
        acc.merge(&other);
        assert_eq!(acc.n_tokens, 8);
        assert!((acc.total_nll() - 12.0).abs() < 1e-12);
        assert!((acc.perplexity().unwrap() - 1.5f64.exp()).abs() < 1e-12);
        assert_eq!(NllAccumulator::new().perplexity(), None);
    }

    #[test]
    fn compensated_sum_is_accurate() {
        let mut acc = NllAccumulator::new();
        acc.add_batch(1e16, 1);
        for _ in 0..1000 {
            acc.add_token(1.0);
        }
        acc.add_batch(-1e16, 0);
        // Naive summation would lose every +1.0 against 1e16.
        assert_eq!(acc.total_nll(), 1000.0);
    }
}
