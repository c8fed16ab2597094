//! BERT's pretraining collator: masked-LM corruption (15%, 80/10/10, optional whole-word
//! masking) and next-sentence-prediction pairs.

use rand::Rng;

/// An MLM(+NSP) training instance: `[CLS] A [SEP] (B [SEP])`.
#[derive(Debug, Clone)]
pub struct Instance {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// 1 when B was drawn from another document (HF: label 1 = "random").
    pub nsp_label: i64,
}

/// Token ids for the special tokens the MLM collator needs.
#[derive(Debug, Clone)]
pub struct MaskingSpec {
    pub mask_id: u32,
    pub vocab_size: u32,
    /// Ids never selected for masking (CLS, SEP, PAD, ...).
    pub special_ids: Vec<u32>,
    pub probability: f64,
    /// For whole-word masking: ids of pieces that continue a word (`##...`).
    pub continuation_ids: Option<std::collections::HashSet<u32>>,
}

/// BERT's masking: select `probability` of the non-special tokens (whole words when
/// `continuation_ids` is set); of those, 80% become `[MASK]`, 10% a random token, 10% stay.
/// Returns the corrupted ids and the labels (-100 where not selected).
pub fn mask_tokens(ids: &[u32], spec: &MaskingSpec, rng: &mut impl Rng) -> (Vec<u32>, Vec<i64>) {
    let mut selected = vec![false; ids.len()];
    let is_special = |id: &u32| spec.special_ids.contains(id);
    match &spec.continuation_ids {
        None => {
            for (s, id) in selected.iter_mut().zip(ids) {
                *s = !is_special(id) && rng.gen::<f64>() < spec.probability;
            }
        }
        Some(cont) => {
            let mut i = 0;
            while i < ids.len() {
                let mut j = i + 1;
                while j < ids.len() && cont.contains(&ids[j]) {
                    j += 1;
                }
                if !is_special(&ids[i]) && rng.gen::<f64>() < spec.probability {
                    selected[i..j].fill(true);
                }
                i = j;
            }
        }
    }
    let mut out = ids.to_vec();
    let mut labels = vec![-100i64; ids.len()];
    for (i, sel) in selected.into_iter().enumerate() {
        if !sel {
            continue;
        }
        labels[i] = ids[i] as i64;
        let r: f64 = rng.gen();
        if r < 0.8 {
            out[i] = spec.mask_id;
        } else if r < 0.9 {
            out[i] = rng.gen_range(0..spec.vocab_size);
        }
    }
    (out, labels)
}

/// Build NSP instances from documents (each a list of tokenized segments), packing
/// segments up to `max_tokens` (without the 3 special tokens) as Hugging Face's
/// `TextDatasetForNextSentencePrediction` does.
pub fn nsp_instances(
    docs: &[Vec<Vec<u32>>],
    max_len: usize,
    cls: u32,
    sep: u32,
    nsp_probability: f64,
    with_b: bool,
    rng: &mut impl Rng,
) -> Vec<Instance> {
    let budget = max_len.saturating_sub(if with_b { 3 } else { 2 }).max(2);
    let mut out = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        let mut chunk: Vec<&Vec<u32>> = Vec::new();
        let mut len = 0;
        let mut i = 0;
        while i < doc.len() {
            chunk.push(&doc[i]);
            len += doc[i].len();
            let last = i + 1 == doc.len();
            if (last || len >= budget) && !chunk.is_empty() {
                let mut a: Vec<u32>;
                let mut b: Vec<u32> = vec![];
                let mut nsp_label = 0;
                if !with_b {
                    a = chunk.iter().flat_map(|s| s.iter().copied()).collect();
                } else {
                    let a_end = if chunk.len() >= 2 {
                        rng.gen_range(1..chunk.len())
                    } else {
                        1
                    };
                    a = chunk[..a_end]
                        .iter()
                        .flat_map(|s| s.iter().copied())
                        .collect();
                    let random_b =
                        chunk.len() == 1 || (docs.len() > 1 && rng.gen::<f64>() < nsp_probability);
                    if random_b && docs.len() > 1 {
                        nsp_label = 1;
                        let mut other = rng.gen_range(0..docs.len());
                        while other == d {
                            other = rng.gen_range(0..docs.len());
                        }
                        let od = &docs[other];
                        let start = rng.gen_range(0..od.len());
                        for seg in &od[start..] {
                            if b.len() >= budget.saturating_sub(a.len()) {
                                break;
                            }
                            b.extend(seg);
                        }
                        // The unused segments of this chunk go back into the stream.
                        i -= chunk.len() - a_end;
                    } else {
                        b = chunk[a_end..]
                            .iter()
                            .flat_map(|s| s.iter().copied())
                            .collect();
                    }
                }
                // Truncate the longer side until the pair fits (BERT's truncate_seq_pair).
                while a.len() + b.len() > budget {
                    if a.len() > b.len() {
                        a.pop();
                    } else {
                        b.pop();
                    }
                }
                if !a.is_empty() && (!with_b || !b.is_empty()) {
                    let mut ids = vec![cls];
                    ids.extend(&a);
                    ids.push(sep);
                    let mut type_ids = vec![0u32; ids.len()];
                    if with_b {
                        ids.extend(&b);
                        ids.push(sep);
                        type_ids.resize(ids.len(), 1);
                    }
                    out.push(Instance {
                        ids,
                        type_ids,
                        nsp_label,
                    });
                }
                chunk.clear();
                len = 0;
            }
            i += 1;
        }
    }
    out
}
