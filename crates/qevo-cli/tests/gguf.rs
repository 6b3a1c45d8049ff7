//! `qevo gguf` end to end on the embedded model, with small settings: the file, its plan,
//! outcome and card, the self-check's figures, the size it keeps to, and the bad-input
//! refusals (a size no plan reaches, an unknown llama.cpp type, `--compare` without
//! llama.cpp's tools).

mod common;

use common::{gguf_flags, text, GGUF};
use std::path::Path;
use std::process::{Command, Output};

fn gguf(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qevo"))
        .arg("gguf")
        .args(GGUF)
        .args(extra)
        .env("QEVO_CACHE_DIR", dir.join("cache"))
        .env("QEVO_LLAMA_TOOLS", dir.join("no-tools"))
        .output()
        .expect("run qevo")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn gguf_writes_a_file_that_rescores_to_its_reported_kl_within_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m-q4km.gguf");
    let o = gguf(
        dir.path(),
        &["--size", "Q4_K_M", "--out", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v = json(&dir.path().join("m-q4km.json"));
    let oc = &v["outcome"];
    let (reported, file) = (
        oc["reported"]["kl"].as_f64().unwrap(),
        oc["file_check"]["kl"].as_f64().unwrap(),
    );
    assert!(
        (reported - file).abs() <= 1e-3 * reported,
        "{reported} vs {file}"
    );
    let budget = oc["budget_bytes"].as_u64().unwrap();
    let plan_bytes = match oc["chosen"].as_str().unwrap() {
        "evolved" => oc["evolved"]["plan_bytes"].as_u64().unwrap(),
        _ => oc["llama_mix"]["plan_bytes"].as_u64().unwrap(),
    };
    assert!(plan_bytes <= budget, "{plan_bytes} > {budget}");
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        oc["file_bytes"].as_u64().unwrap()
    );
    let card = std::fs::read_to_string(dir.path().join("m-q4km.md")).unwrap();
    for part in [
        "## Types per role",
        "| attn_v |",
        "Q4_K_M",
        "qevo gguf",
        "## The search at the size limit",
        "| Lagrangian allocation |",
    ] {
        assert!(card.contains(part), "card lacks {part}:\n{card}");
    }
    // The plan beside the file is one `qevo export` takes.
    let plan = dir.path().join("m-q4km.plan.json");
    let re = dir.path().join("re.gguf");
    let o = Command::new(env!("CARGO_BIN_EXE_qevo"))
        .args([
            "export",
            "--plan",
            plan.to_str().unwrap(),
            "--out",
            re.to_str().unwrap(),
        ])
        .env("QEVO_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn gguf_time_budget_stops_the_evolution_and_tuning_before_their_counts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    // GGUF with its generation and step counts raised far past the budget.
    let o = Command::new(env!("CARGO_BIN_EXE_qevo"))
        .arg("gguf")
        .args(gguf_flags(&[
            "--generations",
            "100000",
            "--tune-steps",
            "100000",
        ]))
        .args(["--time-budget", "20s", "--size", "Q4_K_M"])
        .args(["--out", out.to_str().unwrap()])
        .env("QEVO_CACHE_DIR", dir.path().join("cache"))
        .output()
        .expect("run qevo");
    assert!(o.status.success(), "{}", text(&o));
    let oc = &json(&dir.path().join("m.json"))["outcome"];
    // A loaded machine may leave too little for one step: then tuning says so.
    match oc["tune"]["steps"].as_u64() {
        Some(steps) => assert!((1..100000).contains(&steps), "tune steps {steps}"),
        None => {
            let k = &oc["tune_skipped"];
            assert!(
                k["needed_seconds"].as_f64() > k["left_seconds"].as_f64(),
                "{oc}"
            );
        }
    }
    let history =
        std::fs::read_to_string(out.with_extension("qevo").join("search/history.jsonl")).unwrap();
    let generations = history.lines().count();
    assert!(generations < 100000, "{generations} generations");
}

#[test]
fn gguf_skips_tuning_when_its_smallest_run_would_pass_the_time_budget() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let out_flag = ["--out", out.to_str().unwrap()];
    let o = gguf(
        dir.path(),
        &[&["--time-budget", "1s", "--size", "Q4_K_M"][..], &out_flag].concat(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("tuning skipped: its smallest run needs about"),
        "{}",
        text(&o)
    );
    let oc = &json(&dir.path().join("m.json"))["outcome"];
    assert!(oc["tune"].is_null(), "{oc}");
    let k = &oc["tune_skipped"];
    assert!(
        k["needed_seconds"].as_f64() > k["left_seconds"].as_f64(),
        "{oc}"
    );
    let card = std::fs::read_to_string(out.with_extension("md")).unwrap();
    assert!(card.contains("Tuning did not run"), "{card}");
}

#[test]
fn gguf_compare_without_the_tools_says_how_to_build_them_and_still_writes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let o = gguf(
        dir.path(),
        &[
            "--size",
            "Q3_K_M",
            "--out",
            out.to_str().unwrap(),
            "--compare",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("build_llama_tools.sh"), "{}", text(&o));
    assert!(out.is_file());
}

#[test]
fn gguf_refuses_a_size_below_the_smallest_plan_or_above_f16_naming_both_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    for (size, words) in [
        ("100KB", ["below the smallest plan", "100000-byte"]),
        (
            "20bpw",
            ["above the model with every tensor at f16", "bytes"],
        ),
    ] {
        let o = gguf(
            dir.path(),
            &["--size", size, "--out", out.to_str().unwrap()],
        );
        assert!(!o.status.success());
        let t = text(&o);
        assert!(t.contains("--size"), "{t}");
        for w in words {
            assert!(t.contains(w), "{size}: {t}");
        }
        assert!(!out.exists());
    }
}

#[test]
fn gguf_an_unknown_llama_type_lists_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let o = gguf(
        dir.path(),
        &["--size", "Q4_K_X", "--out", out.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("Q4_K_X") && t.contains("Q4_K_M") && t.contains("IQ2_XXS"),
        "{t}"
    );
}
