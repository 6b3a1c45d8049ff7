//! The `qevo` binary end to end on the embedded model with small settings: the main job,
//! its outputs, exact resume, re-scoring and export of the plan, and the bad-input errors.

mod common;

use common::{embedded_plan, qevo, search, text};

#[test]
fn search_writes_every_output_and_resume_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let full = tmp.path().join("full");
    let o = search(&full, &cache, &["--generations", "4"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    for section in [
        "Recommended plan",
        "Performance against FP",
        "Pareto front",
        "Convergence",
        "At matched sizes",
    ] {
        assert!(out.contains(section), "missing `{section}` in:\n{out}");
    }
    for f in [
        "plan.json",
        "plan.yaml",
        "front.json",
        "history.jsonl",
        "pareto.svg",
        "convergence.svg",
        "report.html",
        "checkpoint.json",
    ] {
        let p = full.join(f);
        assert!(
            p.metadata().map(|m| m.len() > 0).unwrap_or(false),
            "{f} missing or empty"
        );
    }
    assert_eq!(
        std::fs::read_to_string(full.join("history.jsonl"))
            .unwrap()
            .lines()
            .count(),
        5
    );
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["schema_version"], 1);
    assert_eq!(plan["target"], "arm-neon");

    // Stop after 2 generations, then resume to 4: the same front and history.
    let part = tmp.path().join("part");
    let o = search(&part, &cache, &["--generations", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = search(&part, &cache, &["--generations", "4", "--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(full.join("front.json")).unwrap(),
        std::fs::read_to_string(part.join("front.json")).unwrap()
    );
    // Everything, the cache counters included: the checkpoint carries the memos.
    for f in ["history.jsonl", "plan.json"] {
        assert_eq!(
            std::fs::read_to_string(full.join(f)).unwrap(),
            std::fs::read_to_string(part.join(f)).unwrap(),
            "{f} differs after --resume"
        );
    }

    // The plan re-scores, prices and exports.
    let plan_path = full.join("plan.yaml");
    let o = qevo(
        &[
            "eval",
            "--plan",
            plan_path.to_str().unwrap(),
            "--seq-len",
            "64",
            "--max-windows",
            "2",
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("KL to FP"));
    let o = qevo(
        &[
            "cost",
            "--plan",
            plan_path.to_str().unwrap(),
            "--target",
            "hexagon",
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("latency"));
    let gguf = tmp.path().join("model.gguf");
    let o = qevo(
        &[
            "export",
            "--plan",
            plan_path.to_str().unwrap(),
            "--format",
            "gguf",
            "--out",
            gguf.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = qevo(
        &[
            "eval",
            gguf.to_str().unwrap(),
            "--seq-len",
            "64",
            "--max-windows",
            "2",
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn unknown_target_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let o = qevo(
        &[
            "search",
            "--target",
            "toaster",
            "--out",
            out.to_str().unwrap(),
        ],
        &tmp.path().join("c"),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("toaster"), "{}", text(&o));
}

#[test]
fn empty_or_too_short_text_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "   \n").unwrap();
    let o = search(
        &tmp.path().join("o"),
        &tmp.path().join("c"),
        &["--generations", "1", "--text", empty.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("empty"), "{}", text(&o));
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "just a few words").unwrap();
    let o = search(
        &tmp.path().join("o"),
        &tmp.path().join("c"),
        &["--generations", "1", "--text", short.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("window"), "{}", text(&o));
}

#[test]
fn unwritable_output_directory_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let o = search(
        &file.join("sub"),
        &tmp.path().join("c"),
        &["--generations", "1"],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("not-a-dir"), "{}", text(&o));
}

#[test]
fn plan_for_another_model_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("plan.json");
    std::fs::write(&plan, common::OTHER_MODEL_PLAN).unwrap();
    let o = qevo(
        &["eval", "--plan", plan.to_str().unwrap()],
        &tmp.path().join("c"),
    );
    assert!(!o.status.success());
    let out = text(&o);
    assert!(
        out.contains("model_fingerprint") && out.contains("--force"),
        "{out}"
    );
    // Forced, the plan is applied and fails on the first tensor the model lacks.
    let o = qevo(
        &["eval", "--plan", plan.to_str().unwrap(), "--force"],
        &tmp.path().join("c"),
    );
    assert!(!o.status.success());
    let out = text(&o);
    assert!(
        out.contains("warning:") && out.contains("blk.99.attn_q.weight"),
        "{out}"
    );
}

#[test]
fn profiles_list_and_show_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let o = qevo(&["profiles"], tmp.path());
    assert!(o.status.success());
    for p in ["arm-neon", "hexagon", "apple-ane", "jetson-orin"] {
        assert!(text(&o).contains(p), "{}", text(&o));
    }
    let o = qevo(&["profiles", "show", "hexagon"], tmp.path());
    assert!(o.status.success());
    assert!(text(&o).contains('#'), "sources are TOML comments");
}

#[test]
fn export_safetensors_writes_a_directory_qevo_loads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let plan = tmp.path().join("plan.json");
    std::fs::write(
        &plan,
        embedded_plan(&["int4-asym-g128", "int8-sym-channel", "int3-pow2-g32", "f16"]),
    )
    .unwrap();
    let out = tmp.path().join("packed");
    let o = qevo(
        &[
            "export",
            "--plan",
            plan.to_str().unwrap(),
            "--format",
            "safetensors",
            "--out",
            out.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("packed tensors"), "{}", text(&o));
    assert!(out.join("quantization_config.json").is_file());
    let o = qevo(
        &[
            "eval",
            out.to_str().unwrap(),
            "--seq-len",
            "64",
            "--max-windows",
            "2",
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o));

    // GGML block types belong in GGUF.
    std::fs::write(&plan, embedded_plan(&["int4-asym-g128", "q4_k"])).unwrap();
    let o = qevo(
        &[
            "export",
            "--plan",
            plan.to_str().unwrap(),
            "--format",
            "safetensors",
            "--out",
            tmp.path().join("bad").to_str().unwrap(),
        ],
        &cache,
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("blk.0.attn_q.weight"), "{}", text(&o));
}

#[test]
fn export_compressed_tensors_writes_a_directory_and_refuses_pow2_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let plan = tmp.path().join("plan.json");
    let export = |formats: &[&str], out: &str| {
        std::fs::write(&plan, embedded_plan(formats)).unwrap();
        let out = tmp.path().join(out);
        let args = [
            "export",
            "--plan",
            plan.to_str().unwrap(),
            "--format",
            "compressed-tensors",
            "--out",
            out.to_str().unwrap(),
        ];
        (qevo(&args, &cache), out)
    };
    let (o, out) = export(
        &["f16", "int4-sym-g128", "int8-sym-channel", "int3-asym-g64"],
        "ct",
    );
    assert!(o.status.success(), "{}", text(&o));
    let msg = text(&o);
    assert!(msg.contains("3 config group(s)"), "{msg}");
    assert!(
        msg.contains("vLLM refuses bits other than 4 and 8"),
        "{msg}"
    );
    assert!(msg.contains("transformers refuses asymmetric"), "{msg}");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["quantization_config"]["quant_method"],
        "compressed-tensors"
    );
    assert!(!out.join("quantization_config.json").exists());

    // Power-of-two scales stay in qevo-int.
    let (o, out) = export(&["f16", "int4-pow2-g128"], "bad");
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(
        msg.contains("blk.0.attn_q.weight") && msg.contains("power-of-two"),
        "{msg}"
    );
    assert!(!out.exists());
}

#[test]
fn infeasible_search_writes_every_output_and_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let o = search(
        &out,
        &cache,
        &["--generations", "1", "--max-size-mb", "0.001"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let msg = text(&o);
    assert!(
        msg.contains("max_size_mb (user)") && msg.contains("limit 0.001"),
        "{msg}"
    );
    for f in ["plan.json", "front.json", "history.jsonl", "report.html"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["failing"][0]["name"], "max_size_mb (user)");
}

#[test]
fn screening_and_crossover_flag_errors_name_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    for (flag, value, want) in [
        (
            "--epsilon",
            "0.1,0.2",
            "--epsilon: expected one value or four",
        ),
        ("--epsilon", "1.5", "--epsilon: 1.5 is outside 0..1"),
    ] {
        let o = qevo(
            &["search", flag, value, "--out", out.to_str().unwrap()],
            &cache,
        );
        assert_eq!(o.status.code(), Some(1), "{flag} {value}");
        assert!(text(&o).contains(want), "{flag} {value}: {}", text(&o));
    }
    // A mode is an enum clap checks: a usage error listing the choices.
    let o = qevo(&["search", "--crossover", "blend"], &cache);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("invalid value 'blend' for '--crossover")
            && text(&o).contains("one-point"),
        "{}",
        text(&o)
    );
}

#[test]
fn search_flag_errors_name_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    // SMALL sets these flags, and clap refuses a flag given twice: spell them out.
    let o = qevo(
        &[
            "search",
            "--calib-windows",
            "0",
            "--out",
            out.to_str().unwrap(),
        ],
        &cache,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("--calib-windows: must be at least 1"),
        "{}",
        text(&o)
    );
    let o = qevo(
        &[
            "search",
            "--seq-len",
            "1000000",
            "--out",
            out.to_str().unwrap(),
        ],
        &cache,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--seq-len"), "{}", text(&o));
    let o = search(&out, &cache, &["--resume"]);
    assert!(text(&o).contains("--resume: no checkpoint"), "{}", text(&o));
}

#[test]
fn fifo_text_is_refused_not_waited_on() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("text.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIP: mkfifo is not available");
        return;
    }
    let o = qevo(
        &[
            "eval",
            "--text",
            fifo.to_str().unwrap(),
            "--max-windows",
            "1",
        ],
        &tmp.path().join("c"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not a regular file"), "{}", text(&o));
}

#[test]
fn a_safetensors_file_as_model_says_to_pass_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("model.safetensors");
    std::fs::write(&st, b"not really").unwrap();
    let o = qevo(&["inspect", st.to_str().unwrap()], &tmp.path().join("c"));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("pass the directory"), "{}", text(&o));
}

fn tiny_llama() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../qevo/tests/fixtures/tiny_llama")
}

#[test]
fn quantize_names_each_fallback_it_writes() {
    let cache = tempfile::tempdir().unwrap();
    let model = tiny_llama();
    // 64-wide rows: q4_k's 256-value blocks do not divide them, so llama.cpp writes q5_0.
    let o = qevo(
        &[
            "quantize",
            model.to_str().unwrap(),
            "--format",
            "q4_k",
            "--seq-len",
            "16",
            "--max-windows",
            "2",
        ],
        cache.path(),
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("fallback:        q4_k -> q5_0 on "),
        "no fallback line: {out}"
    );
}

/// `qevo quantize` and Python's `qevo.quantize` both call the library's `score_plan`;
/// the Python package sends its keywords as this JSON of `ScoreOptions`. Same options,
/// same KL.
#[test]
fn quantize_prints_the_librarys_score_for_the_same_options() {
    use qevo::calib::ScoredWith;
    use qevo::plan::TensorPlan;
    use qevo::quant::WeightFormat;
    let cache = tempfile::tempdir().unwrap();
    let model = tiny_llama();
    let args = ["--seq-len", "16", "--max-windows", "2", "--imatrix"];
    let mut cli = vec!["quantize", model.to_str().unwrap(), "--format", "q4_0"];
    cli.extend_from_slice(&["--act-bits", "8"]);
    cli.extend_from_slice(&args);
    let o = qevo(&cli, cache.path());
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let printed = out
        .lines()
        .find(|l| l.starts_with("KL to FP:"))
        .expect(&out);
    let m = qevo::Model::load(&model).unwrap();
    let keywords = r#"{"seq_len": 16, "max_windows": 2, "imatrix": true}"#;
    let opts: qevo::eval::ScoreOptions = serde_json::from_str(keywords).unwrap();
    let plan = TensorPlan::uniform(&m, WeightFormat::parse("q4_0").unwrap(), 8).unwrap();
    let s = qevo::eval::score_plan(&m, &plan, &ScoredWith::default(), &opts).unwrap();
    assert!(s.metrics.kl > 0.0);
    let want = format!("{:.5} nats/token", s.metrics.kl);
    assert!(printed.ends_with(&want), "{printed} against {want}");
}

#[test]
fn seq_len_beyond_the_models_positions_is_refused_not_clamped() {
    let cache = tempfile::tempdir().unwrap();
    let model = tiny_llama();
    let o = qevo(
        &["eval", model.to_str().unwrap(), "--seq-len", "65"],
        cache.path(),
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("--seq-len: 65 tokens") && out.contains("at most 64 positions"),
        "{out}"
    );
    // Without --seq-len the default is capped by the model, so plain eval works.
    let o = qevo(&["eval", model.to_str().unwrap()], cache.path());
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn missing_file_error_says_its_cause_once() {
    let cache = tempfile::tempdir().unwrap();
    let missing = cache.path().join("nope.gguf");
    let o = qevo(&["inspect", missing.to_str().unwrap()], cache.path());
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("nope.gguf"), "{out}");
    let cause = "No such file or directory";
    assert_eq!(out.matches(cause).count(), 1, "{out}");
}

#[test]
fn imatrix_written_by_qevo_imatrix_is_read_back_by_quantize() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let im = tmp.path().join("im.gguf");
    let p = im.to_str().unwrap();
    let o = qevo(
        &["imatrix", "--ctx", "64", "--chunks", "2", "--out", p],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 chunks of 64 tokens"), "{}", text(&o));
    let args = ["quantize", "--format", "iq2_xs", "--max-windows", "1"];
    // token_embd has no entry (a lookup): the type that needs one is refused naming it.
    let o = qevo(&[&args[..], &["--imatrix-file", p]].concat(), &cache);
    assert!(!o.status.success());
    assert!(text(&o).contains("token_embd.weight"), "{}", text(&o));
    let o = qevo(
        &[
            "quantize",
            "--format",
            "q4_k",
            "--max-windows",
            "1",
            "--imatrix-file",
            p,
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("imatrix {p}")), "{}", text(&o));
    let junk = tmp.path().join("junk.dat");
    std::fs::write(&junk, b"junk").unwrap();
    let o = qevo(
        &[
            "quantize",
            "--format",
            "q4_k",
            "--imatrix-file",
            junk.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("junk.dat"), "{}", text(&o));
}

#[test]
fn optuna_journal_holds_one_finished_trial_per_evaluated_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let journal = tmp.path().join("study.log");
    let o = search(
        &tmp.path().join("out"),
        &cache,
        &[
            "--generations",
            "1",
            "--no-baselines",
            "--optuna-journal",
            journal.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let ops: Vec<serde_json::Value> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ops[0]["op_code"], 0);
    assert_eq!(ops[0]["directions"], serde_json::json!([1, 1, 1, 1]));
    let count = |code: u64| ops.iter().filter(|op| op["op_code"] == code).count();
    let trials = count(4);
    assert!(trials > 0);
    // Each trial ends with its state: COMPLETE (1) with four values, or PRUNED (2).
    assert_eq!(count(6), trials);
    for op in ops.iter().filter(|op| op["op_code"] == 6) {
        match op["state"].as_u64() {
            Some(1) => assert_eq!(op["values"].as_array().unwrap().len(), 4),
            Some(2) => assert!(op["values"].is_null()),
            s => panic!("state {s:?}"),
        }
    }
    // One categorical parameter per gene (9 roles on the embedded model) per trial.
    assert_eq!(count(5), 9 * trials);
}

/// `qevo export` of a plan scored with output rounding rebuilds its moments from the plan
/// file's record: the GGUF differs from the same plan exported without the record
/// (llama.cpp's block rounding), so the file holds the bytes the search scored.
#[test]
fn export_of_an_output_rounded_plan_uses_its_rounding_record() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let o = search(
        &out,
        &cache,
        &[
            "--generations",
            "1",
            "--rounding",
            "output",
            "--no-baselines",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let plan_path = out.join("plan.json");
    let mut plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan_path).unwrap()).unwrap();
    assert!(plan["rounding"]["tokens"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));
    plan.as_object_mut().unwrap().remove("rounding");
    let block_plan = tmp.path().join("block.json");
    std::fs::write(&block_plan, plan.to_string()).unwrap();
    let export = |p: &std::path::Path, name: &str| {
        let f = tmp.path().join(name);
        let o = qevo(
            &[
                "export",
                "--plan",
                p.to_str().unwrap(),
                "--out",
                f.to_str().unwrap(),
            ],
            &cache,
        );
        assert!(o.status.success(), "{}", text(&o));
        std::fs::read(f).unwrap()
    };
    let (output, block) = (
        export(&plan_path, "output.gguf"),
        export(&block_plan, "block.gguf"),
    );
    assert_eq!(output.len(), block.len(), "same types, same size");
    assert_ne!(
        output, block,
        "export ignored the plan's output-rounding record"
    );
}

/// `eval --protocol llama-cpp` prints the figure of llama.cpp's protocol, computed by the
/// library's `llama_cpp_perplexity_of_text` on the same text, context and chunk count.
#[test]
fn eval_llama_cpp_protocol_prints_the_protocols_perplexity() {
    let cache = tempfile::tempdir().unwrap();
    let o = qevo(
        &[
            "eval",
            "--protocol",
            "llama-cpp",
            "--seq-len",
            "64",
            "--max-windows",
            "3",
        ],
        cache.path(),
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("llama-perplexity -c 64 --chunks 3"), "{out}");
    let dir = qevo::assets::default_model_dir(cache.path()).unwrap();
    let m = qevo::model::Model::load(&dir).unwrap();
    let want = qevo::eval::llama_ppl::llama_cpp_perplexity_of_text(
        &m,
        qevo::assets::HELDOUT_TEXT,
        64,
        Some(3),
    )
    .unwrap();
    assert!(
        out.contains(&format!("perplexity:  {:.4}", want.perplexity)),
        "{out}"
    );
}

/// `export --out MODEL_DIR/sub/..` (a directory not made yet, then `..`) exited 0 and
/// replaced the source's model.safetensors and config.json; it is refused, and the
/// source is untouched.
#[test]
fn export_through_a_missing_subdirectory_never_overwrites_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let model = qevo::assets::default_model_dir(&cache).unwrap();
    let weights = std::fs::read(model.join("model.safetensors")).unwrap();
    let plan = tmp.path().join("plan.json");
    std::fs::write(&plan, embedded_plan(&["int8-sym-channel"])).unwrap();
    let sneaky = model.join("sub").join("..");
    for format in ["safetensors", "compressed-tensors"] {
        let o = qevo(
            &[
                "export",
                "--plan",
                plan.to_str().unwrap(),
                model.to_str().unwrap(),
                "--format",
                format,
                "--out",
                sneaky.to_str().unwrap(),
            ],
            &cache,
        );
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{format}: {out}");
        assert!(out.contains("overwrite the source"), "{format}: {out}");
    }
    assert_eq!(
        std::fs::read(model.join("model.safetensors")).unwrap(),
        weights
    );
    assert!(!model.join("sub").exists());
}

/// `qevo imatrix MODEL --out MODEL/model.safetensors` replaced the model's weights with
/// an imatrix; an output that is, or is inside, an input is refused before any work.
#[test]
fn imatrix_never_writes_over_its_model_or_text() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let model = qevo::assets::default_model_dir(&cache).unwrap();
    let weights = model.join("model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let text_file = tmp.path().join("calib.txt");
    std::fs::write(&text_file, qevo::assets::CALIB_TEXT).unwrap();
    for out in [
        weights.clone(),
        model.join("sub").join("..").join("im.gguf"),
        text_file.clone(),
    ] {
        let o = qevo(
            &[
                "imatrix",
                model.to_str().unwrap(),
                "--text",
                text_file.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &cache,
        );
        let msg = text(&o);
        assert_eq!(o.status.code(), Some(1), "{}: {msg}", out.display());
        assert!(msg.contains("would overwrite the input"), "{msg}");
    }
    assert_eq!(std::fs::read(&weights).unwrap(), before);
}
