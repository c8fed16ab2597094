//! Asynchronous successive halving (ASHA, Li et al. 2020): trials start at the lowest rung
//! with the least training; a trial that finished rung k is promoted to rung k + 1 as soon as
//! it is in the best 1/eta of all trials that finished rung k. Nothing waits for a rung to
//! fill, so parallel workers never idle while trials remain.
//!
//! Plain grid and random search are the one-rung case: every trial trains to the end.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

/// Which way the metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Max,
    Min,
}

impl Direction {
    /// Whether `a` is better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Max => a > b,
            Direction::Min => a < b,
        }
    }
}

/// The next piece of work: train `trial` up to rung `rung` (from where it stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    pub trial: usize,
    pub rung: usize,
}

/// ASHA's bookkeeping over `trials` trials and the rungs' budgets (in updates, ascending;
/// the last is a full trial).
#[derive(Debug, Clone)]
pub struct Asha {
    /// Updates at the end of each rung.
    pub rungs: Vec<usize>,
    pub eta: usize,
    pub direction: Direction,
    trials: usize,
    started: usize,
    /// Per rung: trial -> metric, for trials that finished it.
    results: Vec<BTreeMap<usize, f64>>,
    /// Trials promoted out of each rung.
    promoted: Vec<Vec<usize>>,
}

impl Asha {
    /// Rungs at `min`, `min * eta`, `min * eta^2`, ..., as many as fit a factor eta below
    /// `max` (ASHA's floor(log_eta(max / min)) of them), then `max`.
    pub fn rungs(min: usize, max: usize, eta: usize) -> Result<Vec<usize>> {
        if min == 0 || min > max {
            bail!("asha: min_resource must be between 1 and max_resource ({max}), got {min}")
        }
        if eta < 2 {
            bail!("asha: reduction_factor must be at least 2, got {eta}")
        }
        let mut rungs = Vec::new();
        let mut r = min;
        while r.saturating_mul(eta) <= max {
            rungs.push(r);
            r = r.saturating_mul(eta);
        }
        rungs.push(max);
        Ok(rungs)
    }

    pub fn new(trials: usize, rungs: Vec<usize>, eta: usize, direction: Direction) -> Self {
        let n = rungs.len();
        Self {
            rungs,
            eta,
            direction,
            trials,
            started: 0,
            results: vec![BTreeMap::new(); n],
            promoted: vec![Vec::new(); n],
        }
    }

    /// The next job, or None when nothing can start now (all trials started and no
    /// promotion is due; more may come when running jobs report).
    pub fn next_job(&mut self) -> Option<Job> {
        // Promotions first, from the highest rung down (ASHA's get_job).
        for k in (0..self.rungs.len().saturating_sub(1)).rev() {
            if let Some(trial) = self.promotable(k) {
                self.promoted[k].push(trial);
                return Some(Job { trial, rung: k + 1 });
            }
        }
        if self.started < self.trials {
            self.started += 1;
            return Some(Job {
                trial: self.started - 1,
                rung: 0,
            });
        }
        None
    }

    /// The best trial of rung `k` that is in the top `finished / eta` and not yet promoted.
    fn promotable(&self, k: usize) -> Option<usize> {
        let done = &self.results[k];
        let top = done.len() / self.eta;
        let mut ranked: Vec<(usize, f64)> = done.iter().map(|(&t, &m)| (t, m)).collect();
        // Best first; ties by trial number (the earlier trial first).
        ranked.sort_by(|a, b| match self.direction.better(a.1, b.1) {
            true => std::cmp::Ordering::Less,
            false if self.direction.better(b.1, a.1) => std::cmp::Ordering::Greater,
            false => a.0.cmp(&b.0),
        });
        ranked
            .into_iter()
            .take(top)
            .map(|(t, _)| t)
            .find(|t| !self.promoted[k].contains(t))
    }

    /// Record that `job` finished with `metric` (NaN for a trial that failed: it is never
    /// promoted).
    pub fn report(&mut self, job: Job, metric: f64) {
        let metric = match metric.is_nan() {
            true => match self.direction {
                Direction::Max => f64::NEG_INFINITY,
                Direction::Min => f64::INFINITY,
            },
            false => metric,
        };
        self.results[job.rung].insert(job.trial, metric);
    }

    /// Whether every trial has started and no promotion is due (with no job running, the
    /// search is over).
    pub fn exhausted(&mut self) -> bool {
        let snapshot = (self.started, self.promoted.clone());
        let next = self.next_job();
        (self.started, self.promoted) = snapshot;
        next.is_none()
    }

    /// The highest rung each trial reached, with its metric there.
    pub fn final_results(&self) -> BTreeMap<usize, (usize, f64)> {
        let mut out = BTreeMap::new();
        for (k, done) in self.results.iter().enumerate() {
            for (&t, &m) in done {
                out.insert(t, (k, m));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_grow_by_eta_up_to_the_full_budget() {
        assert_eq!(Asha::rungs(14, 126, 3).unwrap(), vec![14, 42, 126]);
        // 444 x 9 = 3,996 is not a factor 3 below 4,000: the last rung is 4,000 itself.
        assert_eq!(Asha::rungs(444, 4000, 3).unwrap(), vec![444, 1332, 4000]);
        assert_eq!(Asha::rungs(14, 125, 3).unwrap(), vec![14, 125]);
        assert_eq!(Asha::rungs(1, 9, 3).unwrap(), vec![1, 3, 9]);
        assert_eq!(Asha::rungs(5, 5, 3).unwrap(), vec![5]);
        assert!(Asha::rungs(0, 5, 3).is_err());
        assert!(Asha::rungs(2, 5, 1).is_err());
    }

    /// The worked example: 9 trials, eta 3, rungs of 1, 3 and 9 updates, one worker, a
    /// larger metric better. Trial t scores S[t] at rung 0 and S[t] + 10 x rung above it.
    /// Traced by hand:
    /// - trials 0-2 start; with 3 done, rung 0's top 1 is trial 2 (8): promoted to rung 1;
    /// - trials 3-5 start; with 6 done, rung 0's top 2 are 2 and 4 (7): 4 goes to rung 1;
    /// - trial 6 (9) starts; 7 done, top 2 are 6 and 2: 6 goes to rung 1, where with 3 done
    ///   (18, 17, 19) the top 1 is 6: promoted to rung 2;
    /// - trials 7 and 8 start; rung 0's top 3 (6, 2, 4) are all promoted, rung 1's top 1 (6)
    ///   too: the search ends, 13 jobs, 9 + 3 x 2 + 1 x 6 = 21 updates instead of 81.
    #[test]
    fn promotions_follow_the_worked_example() {
        const S: [f64; 9] = [5., 1., 8., 2., 7., 3., 9., 0., 4.];
        let rungs = vec![1, 3, 9];
        let mut asha = Asha::new(9, rungs.clone(), 3, Direction::Max);
        let (mut order, mut updates) = (Vec::new(), 0);
        while let Some(job) = asha.next_job() {
            order.push((job.trial, job.rung));
            updates += rungs[job.rung]
                - if job.rung == 0 {
                    0
                } else {
                    rungs[job.rung - 1]
                };
            asha.report(job, S[job.trial] + 10.0 * job.rung as f64);
        }
        assert_eq!(
            order,
            vec![
                (0, 0),
                (1, 0),
                (2, 0),
                (2, 1),
                (3, 0),
                (4, 0),
                (5, 0),
                (4, 1),
                (6, 0),
                (6, 1),
                (6, 2),
                (7, 0),
                (8, 0),
            ]
        );
        assert_eq!(updates, 21);
        let fin = asha.final_results();
        assert_eq!(fin[&6], (2, 29.0));
        assert_eq!(fin[&2], (1, 18.0));
        assert_eq!(fin[&4], (1, 17.0));
        assert_eq!(fin[&8], (0, 4.0));
        assert!(asha.exhausted());
    }

    #[test]
    fn a_failed_trial_is_never_promoted() {
        let mut asha = Asha::new(3, vec![1, 3], 3, Direction::Min);
        for t in 0..3 {
            let job = asha.next_job().unwrap();
            assert_eq!(job, Job { trial: t, rung: 0 });
            asha.report(job, if t == 1 { f64::NAN } else { 5.0 - t as f64 });
        }
        // Loss: smaller is better; trial 1 failed (NaN), trial 0 scored 5, trial 2 scored 3.
        assert_eq!(asha.next_job(), Some(Job { trial: 2, rung: 1 }));
        assert_eq!(asha.next_job(), None);
    }
}
