//! kill -9 at spread-out moments of a search, each followed by `--resume` (or, when the
//! kill came before the first checkpoint, by a fresh start): every finished run's
//! front.json, plan.json, plan.yaml and history.jsonl equal the uninterrupted run's, byte
//! for byte. Three trials run in the suite; `QEVO_KILL_TRIALS=20 cargo test --release
//! --test kill_resume -- --nocapture` runs the closing-note figure.

mod common;

use common::{text, SMALL};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const COMPARED: [&str; 4] = ["front.json", "plan.json", "plan.yaml", "history.jsonl"];

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
