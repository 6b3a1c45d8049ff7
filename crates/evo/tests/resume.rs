//! Exact resume: a run stopped mid-way (by its observer, or by killing the process
//! that runs it) and resumed from its checkpoint ends with exactly the front, population
//! and history of the run that was never interrupted.

mod common;
use common::{assert_same_run, hash_algo, knapsack_algo};
use evo::{Checkpoint, EvoError, RunOptions, StopReason};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "EVO_RESUME_CHILD_CHECKPOINT";
const SEED: u64 = 2024;

fn stop_at(generation: u64) -> evo::Observer<'static> {
    Box::new(move |r| {
        if r.generation >= generation {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
}

#[test]
fn resume_after_observer_break_matches_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (p, algo) = knapsack_algo(30);
    let full_ck = dir.path().join("full.json");
    let full = algo
        .run(
            &p,
            SEED,
            RunOptions {
                checkpoint: Some(full_ck.clone()),
                ..RunOptions::default()
            },
        )
        .unwrap();
    assert_eq!(full.stop, StopReason::Generations);

    // Stopped three times, resumed each time from the file the previous part wrote.
    let ck = dir.path().join("part.json");
    let mut resume = None;
    for stop in [0, 7, 19] {
        let part = algo
            .run(
                &p,
                SEED,
                RunOptions {
                    checkpoint: Some(ck.clone()),
                    resume: resume.clone(),
                    observer: Some(stop_at(stop)),
                },
            )
            .unwrap();
        assert_eq!(part.stop, StopReason::Observer);
        assert_eq!(part.generations, stop);
        assert_eq!(Checkpoint::load(&ck).unwrap().generation, stop);
        resume = Some(ck.clone());
    }
    let resumed = algo
        .run(
            &p,
            SEED,
            RunOptions {
                checkpoint: Some(ck.clone()),
                resume,
                observer: None,
            },
        )
        .unwrap();
    assert_same_run(&full, &resumed);
    // The final checkpoints agree too, apart from wall time.
    let mut a = Checkpoint::load(&full_ck).unwrap();
    let mut b = Checkpoint::load(&ck).unwrap();
    a.elapsed_s = 0.0;
    b.elapsed_s = 0.0;
    assert_eq!(a, b);
}

#[test]
fn resume_with_four_objectives_matches_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (p, algo) = hash_algo(20);
    let full = algo.run(&p, SEED, RunOptions::default()).unwrap();
    let ck = dir.path().join("ck.json");
    algo.run(
        &p,
        SEED,
        RunOptions {
            checkpoint: Some(ck.clone()),
            observer: Some(stop_at(11)),
            ..RunOptions::default()
        },
    )
    .unwrap();
    let resumed = algo
        .run(
            &p,
            SEED,
            RunOptions {
                resume: Some(ck),
                ..RunOptions::default()
            },
        )
        .unwrap();
    assert_same_run(&full, &resumed);
}

#[test]
fn resume_rejects_a_checkpoint_of_another_search() {
    let dir = tempfile::tempdir().unwrap();
    let (p, algo) = knapsack_algo(3);
    let ck = dir.path().join("ck.json");
    algo.run(
        &p,
        SEED,
        RunOptions {
            checkpoint: Some(ck.clone()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    let other_seed = algo.run(
        &p,
        SEED + 1,
        RunOptions {
            resume: Some(ck.clone()),
            ..RunOptions::default()
        },
    );
    assert!(matches!(
        other_seed,
        Err(EvoError::CheckpointMismatch { .. })
    ));
    let p2 = evo::problems::Knapsack::new(31, 7);
    let other_problem = algo.run(
        &p2,
        SEED,
        RunOptions {
            resume: Some(ck.clone()),
            ..RunOptions::default()
        },
    );
    assert!(matches!(
        other_problem,
        Err(EvoError::CheckpointMismatch { .. })
    ));
    std::fs::write(&ck, b"{ not json").unwrap();
    let torn = algo.run(
        &p,
        SEED,
        RunOptions {
            resume: Some(ck),
            ..RunOptions::default()
        },
    );
    assert!(
        matches!(torn, Err(EvoError::CheckpointParse { .. })),
        "{torn:?}"
    );
}

/// The search the child process runs: the same as the uninterrupted one below, but
/// slowed by its observer so the parent can kill it mid-run.
fn child_search(ck: &Path, generations: u64, delay: Duration) -> evo::SearchResult {
    let (p, algo) = knapsack_algo(generations);
    algo.run(
        &p,
        SEED,
        RunOptions {
            checkpoint: Some(ck.to_path_buf()),
            observer: Some(Box::new(move |_| {
                std::thread::sleep(delay);
                ControlFlow::Continue(())
            })),
            ..RunOptions::default()
        },
    )
    .unwrap()
}

/// Run by `killed_child_process_resumes_to_the_uninterrupted_front` in a child
/// process (it sets the checkpoint path in the environment). Run directly with
/// `--ignored`, it does a short search and checks its checkpoint.
#[test]
#[ignore = "helper: spawned as a child process by killed_child_process_resumes_to_the_uninterrupted_front"]
fn child_search_until_killed() {
    match std::env::var_os(CHILD_ENV) {
        Some(path) => {
            child_search(Path::new(&path), 10_000, Duration::from_millis(40));
        }
        None => {
            let dir = tempfile::tempdir().unwrap();
            let ck = dir.path().join("ck.json");
            let r = child_search(&ck, 3, Duration::ZERO);
            assert_eq!(Checkpoint::load(&ck).unwrap().generation, r.generations);
        }
    }
}

#[test]
fn killed_child_process_resumes_to_the_uninterrupted_front() {
    const TOTAL: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("child.json");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_search_until_killed",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &ck)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let reached = loop {
        if let Ok(c) = Checkpoint::load(&ck) {
            if c.generation >= 5 {
                break c.generation;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child exited early: {status}");
        }
        assert!(Instant::now() < deadline, "child made no progress");
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = Checkpoint::load(&ck).unwrap().generation;
    assert!(
        at_kill >= reached && at_kill < TOTAL,
        "killed at generation {at_kill}"
    );

    let (p, algo) = knapsack_algo(TOTAL);
    let resumed = algo
        .run(
            &p,
            SEED,
            RunOptions {
                checkpoint: Some(ck.clone()),
                resume: Some(ck.clone()),
                observer: None,
            },
        )
        .unwrap();
    let full = algo.run(&p, SEED, RunOptions::default()).unwrap();
    assert_same_run(&full, &resumed);
}

#[test]
fn resume_rejects_a_generation_count_its_history_does_not_back() {
    let dir = tempfile::tempdir().unwrap();
    let (p, algo) = knapsack_algo(3);
    let ck = dir.path().join("ck.json");
    let opts = |resume: Option<std::path::PathBuf>| RunOptions {
        checkpoint: Some(ck.clone()),
        resume,
        ..RunOptions::default()
    };
    algo.run(&p, SEED, opts(None)).unwrap();
    let mut c = Checkpoint::load(&ck).unwrap();
    c.generation = 1_000_000_000;
    c.save(&ck).unwrap();
    match algo.run(&p, SEED, opts(Some(ck.clone()))) {
        Err(EvoError::CheckpointMismatch { what, .. }) => {
            assert!(what.contains("1000000000"), "{what}")
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}
