//! kill -9 at spread-out moments of a search, each followed by `--resume` (or, when the
//! kill came before the first checkpoint, by a fresh start): every finished run's
//! front.json, plan.json, plan.yaml, history.jsonl and report.json equal the
//! uninterrupted run's, byte for byte (how the process ran is `run.json`, not compared). Three trials run in the suite; `QEVO_KILL_TRIALS=20 cargo test --release
//! --test kill_resume -- --nocapture` runs the closing-note figure.

mod common;

use common::{gguf_flags, text, tune_flags, SMALL};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Size limit of the refined search, in MB: between the embedded model's uniform q3_k
/// (1.80 MB) and q4_k (2.36 MB), where the refine stage has moves to make.
const SIZE_LIMIT_MB: &str = "2.0";

const COMPARED: [&str; 5] = [
    "front.json",
    "plan.json",
    "plan.yaml",
    "history.jsonl",
    "report.json",
];

fn search_cmd(out: &Path, cache: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qevo"));
    c.args([
        "search",
        "--target",
        "arm-neon",
        "--generations",
        "6",
        "--out",
    ])
    .arg(out)
    .args(SMALL)
    .env("QEVO_CACHE_DIR", cache)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if resume {
        c.arg("--resume");
    }
    c
}

#[test]
fn killed_searches_resume_to_the_uninterrupted_outputs() {
    let trials: usize = std::env::var("QEVO_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let full = tmp.path().join("full");
    let start = std::time::Instant::now();
    let o = search_cmd(&full, &cache, false).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let run_time = start.elapsed();
    let (mut resumed, mut fresh) = (0, 0);
    for t in 0..trials {
        let out = tmp.path().join(format!("trial{t}"));
        // Kill moments spread (golden-ratio steps) over the later part of the run: the
        // first half is mostly preparation (the FP references), before any checkpoint.
        let frac = 0.4 + 0.6 * ((0.1 + t as f64 * 0.618_034) % 1.0);
        let mut child = search_cmd(&out, &cache, false).spawn().unwrap();
        std::thread::sleep(run_time.mul_f64(frac).max(Duration::from_millis(50)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let has_checkpoint = out.join("checkpoint.json").exists();
        let o = search_cmd(&out, &cache, has_checkpoint).output().unwrap();
        assert!(o.status.success(), "trial {t}: {}", text(&o));
        match has_checkpoint {
            true => resumed += 1,
            false => fresh += 1,
        }
        for f in COMPARED {
            let want = std::fs::read(full.join(f)).unwrap();
            let got = std::fs::read(out.join(f)).unwrap();
            assert!(
                want == got,
                "trial {t} (killed at {frac:.2} of the run): {f} differs"
            );
        }
    }
    println!(
        "{trials} kill -9 trials: {resumed} resumed from a checkpoint, {fresh} restarted before the first; all outputs identical"
    );
}

/// A search killed right after its first checkpoint and resumed writes `report.json`
/// byte for byte as the uninterrupted run does: wall times and the per-process caches'
/// counters, which a resumed process cannot share, are in `run.json`. At a size limit,
/// so the refine stage's record is compared too.
#[test]
fn report_json_of_a_resumed_search_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let limited = |out: &Path, resume: bool| {
        let mut c = search_cmd(out, &cache, resume);
        c.args(["--max-size-mb", SIZE_LIMIT_MB]);
        c
    };
    let full = tmp.path().join("full");
    let o = limited(&full, false).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = tmp.path().join("killed");
    let mut child = limited(&out, false).spawn().unwrap();
    let checkpoint = out.join("checkpoint.json");
    while !checkpoint.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the search ended before its first checkpoint"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    let o = limited(&out, true).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let read = |d: &Path| std::fs::read(d.join("report.json")).unwrap();
    let (want, got) = (read(&full), read(&out));
    assert!(
        String::from_utf8_lossy(&want).contains("\"refine\""),
        "the refine stage did not run: nothing of it compared"
    );
    assert!(want == got, "report.json of the resumed search differs");
    for d in [&full, &out] {
        assert!(
            d.join("run.json").exists(),
            "{} lacks run.json",
            d.display()
        );
    }
}

/// `kill -9` at spread-out moments of `run(out, resume)`, each followed by a resume when
/// `started(out)` (else a fresh start): every file of `compared` equals the
/// uninterrupted run's, byte for byte. Returns (resumed, restarted).
fn kill_loop(
    trials: usize,
    root: &Path,
    run: &dyn Fn(&Path, bool) -> Command,
    started: &dyn Fn(&Path) -> bool,
    compared: &[&str],
) -> (usize, usize) {
    let full = root.join("full");
    std::fs::create_dir_all(&full).unwrap();
    let start = std::time::Instant::now();
    let o = run(&full, false).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let run_time = start.elapsed();
    let (mut resumed, mut fresh) = (0, 0);
    for t in 0..trials {
        let out = root.join(format!("trial{t}"));
        std::fs::create_dir_all(&out).unwrap();
        let frac = 0.2 + 0.8 * ((0.1 + t as f64 * 0.618_034) % 1.0);
        let mut child = run(&out, false).spawn().unwrap();
        std::thread::sleep(run_time.mul_f64(frac).max(Duration::from_millis(50)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let resume = started(&out);
        let o = run(&out, resume).output().unwrap();
        assert!(o.status.success(), "trial {t}: {}", text(&o));
        match resume {
            true => resumed += 1,
            false => fresh += 1,
        }
        for f in compared {
            let want = std::fs::read(full.join(f)).unwrap();
            let got = std::fs::read(out.join(f)).unwrap();
            assert!(
                want == got,
                "trial {t} (killed at {frac:.2} of the run): {f} differs"
            );
        }
    }
    (resumed, fresh)
}

fn trials(default: usize) -> usize {
    std::env::var("QEVO_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The tuned GGUF of a killed and resumed `qevo tune` is the uninterrupted run's.
#[test]
fn killed_tunes_resume_to_the_uninterrupted_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let cache = root.join("cache");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qevo/tests/fixtures/tiny_llama");
    let plan_dir = root.join("plan");
    let o = Command::new(env!("CARGO_BIN_EXE_qevo"))
        .args(["search", "--target", "arm-neon", "--generations", "1"])
        .args(SMALL)
        .arg(&model)
        .arg("--out")
        .arg(&plan_dir)
        .env("QEVO_CACHE_DIR", &cache)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let plan = plan_dir.join("plan.json");
    let run = |out: &Path, resume: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_qevo"));
        c.arg("tune")
            .args(tune_flags(&["--steps", "24"]))
            .arg("--plan")
            .arg(&plan)
            .arg(&model)
            .arg("--out")
            .arg(out)
            .env("QEVO_CACHE_DIR", &cache)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if resume {
            c.arg("--resume");
        }
        c
    };
    let started = |out: &Path| out.join("checkpoint.safetensors").exists();
    let n = trials(3);
    let (resumed, fresh) = kill_loop(n, &root, &run, &started, &["model.gguf"]);
    println!(
        "{n} kill -9 trials of tune: {resumed} resumed, {fresh} restarted; model.gguf identical"
    );
}

/// The file of a killed and resumed `qevo gguf` is the uninterrupted run's.
#[test]
fn killed_gguf_runs_resume_to_the_uninterrupted_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let cache = root.join("cache");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qevo/tests/fixtures/tiny_llama");
    let run = |out: &Path, resume: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_qevo"));
        c.arg("gguf")
            .arg(&model)
            .args(["--size", "Q4_K_M"])
            .args(gguf_flags(&[
                "--seq-len",
                "32",
                "--search-seq-len",
                "32",
                "--generations",
                "2",
                "--tune-steps",
                "6",
            ]))
            .arg("--out")
            .arg(out.join("m.gguf"))
            .env("QEVO_CACHE_DIR", &cache)
            .env("QEVO_LLAMA_TOOLS", root.join("no-tools"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if resume {
            c.arg("--resume");
        }
        c
    };
    let started = |out: &Path| {
        ["search-checkpoint.json", "tune-checkpoint.safetensors"]
            .iter()
            .any(|f| out.join("m.qevo").join(f).exists())
    };
    let n = trials(2);
    let (resumed, fresh) = kill_loop(n, &root, &run, &started, &["m.gguf"]);
    println!(
        "{n} kill -9 trials of qevo gguf: {resumed} resumed, {fresh} restarted; the GGUF identical"
    );
}
