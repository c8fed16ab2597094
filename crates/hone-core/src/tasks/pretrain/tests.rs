use super::*;

#[test]
fn masking_statistics_follow_bert() {
    let spec = MaskingSpec {
        mask_id: 4,
        vocab_size: 1000,
        special_ids: vec![1, 2],
        probability: 0.15,
        continuation_ids: None,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (mut eligible, mut selected, mut as_mask, mut random, mut kept) = (0, 0, 0, 0, 0);
    for _ in 0..2000 {
        // [CLS] tokens... [SEP], tokens never equal to the mask id.
        let ids: Vec<u32> = std::iter::once(1)
            .chain((0..126).map(|i| 10 + (i % 900) as u32))
            .chain(std::iter::once(2))
            .collect();
        let (out, labels) = mask_tokens(&ids, &spec, &mut rng);
        assert_eq!(labels[0], -100, "[CLS] is never masked");
        assert_eq!(labels[127], -100, "[SEP] is never masked");
        eligible += 126;
        for i in 0..ids.len() {
            if labels[i] == -100 {
                assert_eq!(out[i], ids[i], "unselected tokens are untouched");
                continue;
            }
            assert_eq!(labels[i], ids[i] as i64);
            selected += 1;
            if out[i] == 4 {
                as_mask += 1;
            } else if out[i] == ids[i] {
                kept += 1;
            } else {
                random += 1;
            }
        }
    }
    let share = selected as f64 / eligible as f64;
    assert!((share - 0.15).abs() < 0.005, "masked share {share}");
    let s = selected as f64;
    // A random replacement can draw the original token (1/1000): counted as kept.
    assert!(
        (as_mask as f64 / s - 0.8).abs() < 0.01,
        "mask share {}",
        as_mask as f64 / s
    );
    assert!(
        (random as f64 / s - 0.1).abs() < 0.01,
        "random share {}",
        random as f64 / s
    );
    assert!(
        (kept as f64 / s - 0.1).abs() < 0.01,
        "kept share {}",
        kept as f64 / s
    );
}

#[test]
fn whole_word_masking_masks_all_pieces_of_a_word() {
    let cont: std::collections::HashSet<u32> = [21, 22].into_iter().collect();
    let spec = MaskingSpec {
        mask_id: 4,
        vocab_size: 100,
        special_ids: vec![1, 2],
        probability: 0.5,
        continuation_ids: Some(cont),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..200 {
        // word 20 ##21 ##22, word 30, word 40 ##21
        let ids = [1u32, 20, 21, 22, 30, 40, 21, 2];
        let (_, labels) = mask_tokens(&ids, &spec, &mut rng);
        let sel = |i: usize| labels[i] != -100;
        assert!(sel(1) == sel(2) && sel(2) == sel(3));
        assert!(sel(5) == sel(6));
    }
}

#[test]
fn nsp_pairs_are_half_random_and_fit() {
    let docs: Vec<Vec<Vec<u32>>> = (0..40)
        .map(|d| {
            (0..12)
                .map(|s| (0..7).map(|t| (100 + d * 100 + s * 7 + t) as u32).collect())
                .collect()
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let inst = nsp_instances(&docs, 32, 1, 2, 0.5, true, &mut rng);
    assert!(inst.len() > 50);
    let random = inst.iter().filter(|i| i.nsp_label == 1).count() as f64 / inst.len() as f64;
    assert!((random - 0.5).abs() < 0.15, "random share {random}");
    for i in &inst {
        assert!(i.ids.len() <= 32);
        assert_eq!(i.ids[0], 1);
        assert_eq!(*i.ids.last().unwrap(), 2);
        assert_eq!(i.ids.iter().filter(|&&t| t == 2).count(), 2, "two [SEP]");
        let sep = i.ids.iter().position(|&t| t == 2).unwrap();
        assert!(i.type_ids[..=sep].iter().all(|&t| t == 0));
        assert!(i.type_ids[sep + 1..].iter().all(|&t| t == 1));
        // A consecutive pair's B continues A's document.
        let doc_of = |t: u32| (t - 100) / 100;
        let (a_doc, b_doc) = (doc_of(i.ids[1]), doc_of(i.ids[sep + 1]));
        if i.nsp_label == 0 {
            assert_eq!(a_doc, b_doc);
        } else {
            assert_ne!(a_doc, b_doc);
        }
    }
}

/// A tiny causal-LM recipe on a generated corpus in `dir`.
fn clm_recipe(dir: &Path, cache: Option<PathBuf>) -> PretrainRecipe {
    let corpus: String = (0..400)
        .map(|i| format!("line {i}: the quick brown fox {}\n", "ab".repeat(i % 7)))
        .collect();
    let file = dir.join("corpus.txt");
    std::fs::write(&file, corpus).unwrap();
    let mut recipe = PretrainRecipe::default();
    recipe.data.train_files = vec![file];
    recipe.data.block_size = 16;
    recipe.data.sampling = Sampling::RandomWindows;
    recipe.data.token_cache_dir = cache;
    recipe.model.config = Some(
        toml::from_str(
            "model_type = \"gpt2\"\nn_layer = 1\nn_head = 2\nn_embd = 16\nn_positions = 32",
        )
        .unwrap(),
    );
    recipe
}

#[test]
fn disk_token_cache_trains_exactly_like_memory() {
    let dir = std::env::temp_dir().join(format!("hone-token-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let device = Device::Cpu;
    let (model, in_memory) = CausalLmData::prepare(&clm_recipe(&dir, None), &device).unwrap();
    let cache = dir.join("cache");
    let (_, on_disk) =
        CausalLmData::prepare(&clm_recipe(&dir, Some(cache.clone())), &device).unwrap();
    assert!(!in_memory.train_stream.is_file_backed());
    assert!(on_disk.train_stream.is_file_backed());

    // The file holds every token (train and validation split) as 4 bytes.
    let total = in_memory.train_stream.len() + in_memory.valid_stream.len();
    let bytes = std::fs::metadata(cache.join("train.bin")).unwrap().len();
    assert_eq!(bytes, 4 * total as u64);
    // Streaming tokenization equals tokenizing the whole text at once.
    let text = std::fs::read_to_string(dir.join("corpus.txt")).unwrap();
    let whole: Vec<u32> = in_memory
        .tokenizer
        .inner()
        .encode(text.as_str(), false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(whole.len(), total);
    let (train, valid) = (&on_disk.train_stream, &on_disk.valid_stream);
    assert_eq!(train.window(0, train.len()).unwrap(), whole[..train.len()]);
    assert_eq!(valid.window(0, valid.len()).unwrap(), whole[train.len()..]);
    assert!(
        valid.window(1, valid.len()).is_err(),
        "windows past the end are refused"
    );

    assert_eq!(in_memory.num_train_examples(), on_disk.num_train_examples());
    let batch = [0, 7, on_disk.num_train_examples() - 1];
    let a: f32 = in_memory
        .training_loss(&*model.net, &batch)
        .unwrap()
        .to_scalar()
        .unwrap();
    let b: f32 = on_disk
        .training_loss(&*model.net, &batch)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(
        in_memory.evaluate(&*model.net, None).unwrap(),
        on_disk.evaluate(&*model.net, None).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn max_train_chars_keeps_a_prefix() {
    let dir = std::env::temp_dir().join(format!("hone-token-prefix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut recipe = clm_recipe(&dir, None);
    recipe.data.max_train_chars = Some(1000);
    recipe.data.validation_split = 0.0;
    let (_, task) = CausalLmData::prepare(&recipe, &Device::Cpu).unwrap();
    // One character per token.
    assert_eq!(task.train_stream.len(), 1000);
    let text = std::fs::read_to_string(dir.join("corpus.txt")).unwrap();
    let ids = task.train_stream.window(0, 1000).unwrap();
    assert_eq!(task.tokenizer.decode(&ids, false).unwrap(), text[..1000]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sinusoidal_position_init_replaces_the_random_table() {
    let dir = std::env::temp_dir().join(format!("hone-pos-init-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut recipe = clm_recipe(&dir, None);
    let (random, _) = CausalLmData::prepare(&recipe, &Device::Cpu).unwrap();
    recipe.model.position_init = PositionInit::Sinusoidal;
    let (sinusoidal, _) = CausalLmData::prepare(&recipe, &Device::Cpu).unwrap();
    let table = |m: &Model<dyn CausalLm>| {
        m.params
            .get("transformer.wpe.weight")
            .expect("GPT-2 position table")
            .to_vec2::<f32>()
            .unwrap()
    };
    let (r, s) = (table(&random), table(&sinusoidal));
    assert_eq!((s.len(), s[0].len()), (32, 16));
    // Row p holds sin/cos(p / 10000^(2i/16)) scaled by 0.02 * sqrt(2), GPT-2's init std.
    let scale = 0.02 * std::f64::consts::SQRT_2;
    for (p, row) in s.iter().enumerate() {
        for (i, &x) in row.iter().enumerate() {
            let angle = p as f64 / 10000f64.powf((i - i % 2) as f64 / 16.0);
            let want = scale * if i % 2 == 0 { angle.sin() } else { angle.cos() };
            assert!((x as f64 - want).abs() < 1e-6, "({p},{i}): {x} vs {want}");
        }
    }
    // Same RMS as the random table it replaces (both about 0.02).
    let rms = |t: &[Vec<f32>]| {
        let v: Vec<f32> = t.concat();
        (v.iter().map(|x| (x * x) as f64).sum::<f64>() / v.len() as f64).sqrt()
    };
    assert!((rms(&s) - 0.02).abs() < 2e-3, "{}", rms(&s));
    assert!((rms(&r) - 0.02).abs() < 2e-3, "{}", rms(&r));
    // Nothing else changes: the word embeddings are the seed's.
    let wte = |m: &Model<dyn CausalLm>| {
        m.params
            .get("transformer.wte.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(wte(&random), wte(&sinusoidal));
    std::fs::remove_dir_all(&dir).unwrap();
}
