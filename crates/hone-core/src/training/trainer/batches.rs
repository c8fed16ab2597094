//! Which examples form each micro-batch of each epoch: fixed-size or token-budget batches,
//! shuffled by the seed and the epoch, so a resumed run sees the same order. In a
//! data-parallel run these are the global batches (every rank draws the same ones and
//! trains on its shard): the per-rank size times the number of ranks.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{Trainer, TrainingData};

impl<D: TrainingData> Trainer<'_, D> {
    pub(super) fn micro_batches_per_epoch(&self) -> usize {
        match self.global_token_budget() {
            Some(budget) => self.token_batches(budget).len(),
            None => self
                .data
                .num_train_examples()
                .div_ceil(self.global_batch_size()),
        }
    }

    /// Examples per micro-batch over all ranks.
    pub fn global_batch_size(&self) -> usize {
        self.args.per_device_train_batch_size.max(1) * self.comm.world_size()
    }

    /// `max_tokens_per_batch` over all ranks.
    fn global_token_budget(&self) -> Option<usize> {
        self.args
            .max_tokens_per_batch
            .map(|b| b * self.comm.world_size())
    }

    /// Batches of at most `budget` padded tokens over examples sorted by length (ties by
    /// index, so the batches are the same every epoch and on resume).
    pub(super) fn token_batches(&self, budget: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.data.num_train_examples()).collect();
        order.sort_by_key(|&i| (self.data.train_example_length(i), i));
        let mut batches: Vec<Vec<usize>> = Vec::new();
        let mut batch: Vec<usize> = Vec::new();
        for i in order {
            // Sorted ascending: the newest example is the batch's longest.
            let len = self.data.train_example_length(i).max(1);
            if !batch.is_empty() && (batch.len() + 1) * len > budget {
                batches.push(std::mem::take(&mut batch));
            }
            batch.push(i);
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        batches
    }

    /// Optimizer updates per epoch (a partial accumulation at the end of an epoch still
    /// makes an update, as in Hugging Face).
    pub(super) fn updates_per_epoch(&self) -> usize {
        self.micro_batches_per_epoch()
            .div_ceil(self.args.gradient_accumulation_steps.max(1))
    }

    /// Total optimizer updates of the run.
    pub fn total_updates(&self) -> usize {
        match self.args.max_steps {
            Some(s) if s > 0 => s,
            _ => (self.args.num_train_epochs * self.updates_per_epoch() as f64).ceil() as usize,
        }
    }

    /// Example order of `epoch`: a permutation drawn from (seed, epoch), so any epoch can be
    /// rebuilt on resume. With grouping, examples of similar length share a batch and the
    /// batches are shuffled.
    pub fn epoch_batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let n = self.data.num_train_examples();
        let bs = self.global_batch_size();
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.args.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(epoch as u64 + 1)),
        );
        if let Some(budget) = self.global_token_budget() {
            let mut batches = self.token_batches(budget);
            batches.shuffle(&mut rng);
            return batches;
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        if !self.args.group_by_length {
            return order.chunks(bs).map(<[usize]>::to_vec).collect();
        }
        // Sort within mega-batches of 50 batches by length (Hugging Face's grouping).
        let mut batches: Vec<Vec<usize>> = Vec::new();
        for mega in order.chunks(bs * 50) {
            let mut mega = mega.to_vec();
            mega.sort_by_key(|&i| std::cmp::Reverse(self.data.train_example_length(i)));
            batches.extend(mega.chunks(bs).map(<[usize]>::to_vec));
        }
        batches.shuffle(&mut rng);
        batches
    }
}
