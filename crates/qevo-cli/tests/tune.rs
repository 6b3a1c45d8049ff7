//! `qevo tune` end to end on the embedded model: its outputs, the same bytes for one and
//! two threads, exact resume from its checkpoint, and the bad-input errors.

mod common;

use common::{embedded_plan, text};
use std::path::Path;
use std::process::{Command, Output};

/// `qevo tune` on the embedded model with small settings; a flag in `extra` replaces
/// its default.
fn tune(dir: &Path, threads: &str, extra: &[&str]) -> Output {
    let plan = dir.join("plan.json");
    if !plan.exists() {
        std::fs::write(&plan, embedded_plan(&["q4_0", "q4_k", "q5_0"])).unwrap();
    }
    let defaults = [
        ("--plan", plan.to_str().unwrap()),
        ("--steps", "4"),
        ("--windows", "4"),
        ("--heldout-windows", "2"),
        ("--batch", "2"),
        ("--seq-len", "64"),
        ("--checkpoint-every", "2"),
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qevo"));
    cmd.arg("tune");
    for (flag, value) in defaults.iter().filter(|(f, _)| !extra.contains(f)) {
        cmd.args([flag, value]);
    }
    cmd.args(extra)
        .env("QEVO_CACHE_DIR", dir.join("cache"))
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .expect("run qevo")
}

fn out_dir(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

#[test]
fn tune_writes_its_outputs_and_the_same_bytes_for_one_and_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (out_dir(tmp.path(), "one"), out_dir(tmp.path(), "two"));
    let o = tune(tmp.path(), "1", &["--out", &one]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    for want in ["before", "after", "held-out KL", "s/step", "model.gguf"] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(&one).join("tune.json")).unwrap())
            .unwrap();
    assert_eq!(report["history"].as_array().unwrap().len(), 4);
    assert!(report["after"]["calibration"]["kl"].as_f64().unwrap() > 0.0);
    assert!(Path::new(&one).join("checkpoint.safetensors").exists());
    let o = tune(tmp.path(), "2", &["--out", &two]);
    assert!(o.status.success(), "{}", text(&o));
    let bytes = |d: &str| std::fs::read(Path::new(d).join("model.gguf")).unwrap();
    assert!(
        bytes(&one) == bytes(&two),
        "1 and 2 threads wrote different GGUF bytes"
    );
}

/// `--sub-scales` on K types: the same bytes for one and two threads, and sub-scales
/// that moved (bytes other than the run without it).
#[test]
fn tune_sub_scales_writes_the_same_bytes_for_one_and_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("plan.json"),
        embedded_plan(&["q3_k", "q2_k", "q6_k"]),
    )
    .unwrap();
    let dirs = ["one", "two", "plain"].map(|n| out_dir(tmp.path(), n));
    let sub = ["--sub-scales", "--lr-sub", "0.5"];
    for (d, threads, extra) in [
        (&dirs[0], "1", &sub[..]),
        (&dirs[1], "2", &sub[..]),
        (&dirs[2], "2", &[][..]),
    ] {
        let args: Vec<&str> = extra.iter().copied().chain(["--out", d]).collect();
        let o = tune(tmp.path(), threads, &args);
        assert!(o.status.success(), "{}", text(&o));
    }
    let bytes = |d: &str| std::fs::read(Path::new(d).join("model.gguf")).unwrap();
    assert!(
        bytes(&dirs[0]) == bytes(&dirs[1]),
        "1 and 2 threads wrote different GGUF bytes"
    );
    // The kept step is chosen on validation and may be the plan itself in runs this
    // short, so the training is compared, not the kept bytes.
    let history = |d: &str| {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(Path::new(d).join("tune.json")).unwrap())
                .unwrap();
        v["history"].to_string()
    };
    assert!(
        history(&dirs[0]) != history(&dirs[2]),
        "--sub-scales changed nothing"
    );
}

#[test]
fn tune_resumed_from_its_checkpoint_writes_the_uninterrupted_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, part) = (out_dir(tmp.path(), "whole"), out_dir(tmp.path(), "part"));
    assert!(tune(tmp.path(), "2", &["--out", &whole]).status.success());
    let o = tune(tmp.path(), "2", &["--out", &part, "--steps", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = tune(tmp.path(), "2", &["--out", &part, "--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resumed from step 2"), "{}", text(&o));
    let bytes = |d: &str| std::fs::read(Path::new(d).join("model.gguf")).unwrap();
    assert!(
        bytes(&whole) == bytes(&part),
        "resumed run wrote different bytes"
    );
}

#[test]
fn tune_refuses_a_plan_for_another_model_and_a_text_too_short() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("other.json");
    std::fs::write(&plan, common::OTHER_MODEL_PLAN).unwrap();
    let out = out_dir(tmp.path(), "o");
    let o = tune(
        tmp.path(),
        "2",
        &["--plan", plan.to_str().unwrap(), "--out", &out],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("model_fingerprint"), "{}", text(&o));
    let o = tune(
        tmp.path(),
        "2",
        &["--plan", plan.to_str().unwrap(), "--out", &out, "--force"],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("blk.99.attn_q.weight"), "{}", text(&o));

    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "only a few words").unwrap();
    let o = tune(
        tmp.path(),
        "2",
        &["--text", short.to_str().unwrap(), "--out", &out],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("short.txt") && text(&o).contains("tokens"),
        "{}",
        text(&o)
    );
}

#[test]
fn search_tune_front_writes_tuned_ggufs_and_reports_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = common::search(
        &out,
        &tmp.path().join("cache"),
        &[
            "--generations",
            "1",
            "--tune-front",
            "2",
            "--tune-steps",
            "2",
            "--tune-sub-scales",
            "--act-bits",
            "16",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Tuned front plans"), "{}", text(&o));
    let tuned: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tuned.json")).unwrap()).unwrap();
    assert_eq!(
        tuned["config"]["sub_scales"], true,
        "--tune-sub-scales not passed on"
    );
    let rows = tuned["tuned"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        let gguf = r["gguf"].as_str().unwrap();
        assert!(Path::new(gguf).exists(), "{gguf}");
        assert!(r["after"]["heldout"]["kl"].as_f64().unwrap() > 0.0);
    }
    let report = std::fs::read_to_string(out.join("report.json")).unwrap();
    assert!(
        report.contains("\"tuned\""),
        "report.json lacks the tuned rows"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("tuned front plan #"),
        "report.html lacks the tuned rows"
    );
}

/// `--resume` without a checkpoint trained from step 0; it is an error, as for search.
#[test]
fn tune_resume_without_a_checkpoint_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(tmp.path(), "fresh");
    let o = tune(tmp.path(), "1", &["--out", &out, "--resume"]);
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(1), "{msg}");
    assert!(msg.contains("--resume: no checkpoint"), "{msg}");
}

/// Ctrl-C during training exited 0 and said nothing; it writes the result so far, says
/// it was interrupted and exits 130.
#[test]
fn tune_interrupted_by_ctrl_c_exits_130_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("stopped");
    let plan = tmp.path().join("plan.json");
    std::fs::write(&plan, embedded_plan(&["q4_0", "q4_k", "q5_0"])).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_qevo"))
        .args(["tune", "--plan", plan.to_str().unwrap(), "--steps", "400"])
        .args([
            "--windows",
            "4",
            "--heldout-windows",
            "2",
            "--batch",
            "2",
            "--seq-len",
            "64",
        ])
        .args(["--checkpoint-every", "1", "--out", out.to_str().unwrap()])
        .env("QEVO_CACHE_DIR", tmp.path().join("cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first checkpoint means training runs, so the Ctrl-C handler is installed.
    let start = std::time::Instant::now();
    while !out.join("checkpoint.safetensors").exists() {
        assert!(start.elapsed().as_secs() < 300, "no checkpoint after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let o = child.wait_with_output().unwrap();
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(130), "{msg}");
    assert!(
        msg.contains("interrupted after") && msg.contains("of 400 steps"),
        "{msg}"
    );
    assert!(out.join("model.gguf").is_file() && out.join("tune.json").is_file());
}
