//! The search's stages, each on its own, and the promises the caches make: a cache
//! changes how fast a plan is scored, never its score; screening skips only plans that
//! could not enter the front; a resumed search reports what an uninterrupted one does.
//! All on the embedded model with a few short windows.

use qevo::plan::{price, UserLimits};
use qevo::search::problem::{QuantProblem, Scored};
use qevo::search::{self, SearchConfig};
use qevo::search::{Executor, Job};
use qevo::Model;
use std::ops::ControlFlow;
use std::path::PathBuf;

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets")
}

fn model() -> Model {
    Model::load(&assets()).unwrap()
}

fn texts() -> (String, String) {
    let read = |f: &str| std::fs::read_to_string(assets().join(f)).unwrap();
    (read("calib.txt"), read("heldout.txt"))
}

/// A small, fast configuration: 3 windows of 32 tokens, no screening unless asked.
fn small_config() -> SearchConfig {
    let mut cfg = SearchConfig::with_defaults().unwrap();
    cfg.data.seq_len = 32;
    cfg.data.calib_windows = 3;
    cfg.data.screen_windows = 3;
    cfg.data.heldout_windows = 2;
    cfg.evolution.population = 8;
    cfg.evolution.generations = 3;
    cfg
}

/// `small_config` with one gene per tensor (plans that share early blocks share states).
fn small_tensor_config() -> SearchConfig {
    let mut cfg = small_config();
    cfg.space.unit = qevo::search::space::UnitMode::Tensor;
    cfg
}

/// `on` prepared twice: caches on and caches off.
fn on_and_off<'m>(m: &'m Model, on: &SearchConfig) -> (search::Prepared<'m>, search::Prepared<'m>) {
    let (calib, heldout) = texts();
    let p_on = search::prepare(m, &calib, &heldout, on).unwrap();
    let p_off = search::prepare(m, &calib, &heldout, &caches_off(on)).unwrap();
    (p_on, p_off)
}

fn caches_off(on: &SearchConfig) -> SearchConfig {
    let mut off = on.clone();
    off.caches.enabled = false;
    off
}

/// A few genomes that share early units and differ late (prefix-cache hits).
fn genomes(problem: &QuantProblem) -> Vec<Vec<u16>> {
    let levels: Vec<u16> = problem
        .space
        .choices
        .iter()
        .map(|c| c.len() as u16)
        .collect();
    (0..6u16)
        .map(|k| {
            levels
                .iter()
                .enumerate()
                .map(|(u, &n)| {
                    if u + 3 < levels.len() {
                        (k / 3) % n
                    } else {
                        (k + u as u16) % n
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn prefix_cache_on_and_off_give_identical_scores() {
    let m = model();
    // Tensor units: the genomes below differ only in the last block's tensors.
    let on = small_tensor_config();
    let (p_on, p_off) = on_and_off(&m, &on);
    let q_on = QuantProblem::new(&p_on, &on).unwrap();
    let q_off = QuantProblem::new(&p_off, &caches_off(&on)).unwrap();
    for g in genomes(&q_on) {
        let choices = q_on.space.tensor_choices(&m, &g);
        // Twice on the cached evaluator: the second is answered by the segment memo.
        let a = p_on.evaluator.score(&choices, 3).unwrap();
        let b = p_on.evaluator.score(&choices, 3).unwrap();
        let c = p_off.evaluator.score(&choices, 3).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(q_on.full(&g).unwrap(), q_off.full(&g).unwrap());
    }
    let stats = p_on.evaluator.prefix_stats();
    assert!(stats.hits > 0, "the cache was never used: {stats:?}");
    assert!(
        stats.blocks_reused > 0 && stats.segments_reused > 0,
        "{stats:?}"
    );
    assert_eq!(p_off.evaluator.prefix_stats().hits, 0);
}

/// Held-out scores keep states and sums of their own; they must equal uncached ones, and
/// scoring another reference in between must not serve the held-out text's states.
#[test]
fn held_out_scores_through_their_cache_equal_uncached_ones() {
    let m = model();
    let on = small_tensor_config();
    let (p_on, p_off) = on_and_off(&m, &on);
    let q = QuantProblem::new(&p_on, &on).unwrap();
    for g in genomes(&q) {
        let choices = q.space.tensor_choices(&m, &g);
        let want = p_off
            .evaluator
            .score_with(&p_off.heldout, &choices)
            .unwrap();
        assert_eq!(
            p_on.evaluator.score_with(&p_on.heldout, &choices).unwrap(),
            want
        );
        // The calibration text through the same entry point: another reference.
        let calib_score = p_on
            .evaluator
            .score_with(&p_on.evaluator.reference, &choices)
            .unwrap();
        assert_eq!(calib_score, p_off.evaluator.score(&choices, 3).unwrap());
        assert_eq!(
            p_on.evaluator.score_with(&p_on.heldout, &choices).unwrap(),
            want
        );
    }
    // Without a reference switch, neighbours share states and repeats are memo hits.
    for g in genomes(&q) {
        let choices = q.space.tensor_choices(&m, &g);
        let want = p_off
            .evaluator
            .score_with(&p_off.heldout, &choices)
            .unwrap();
        for _ in 0..2 {
            assert_eq!(
                p_on.evaluator.score_with(&p_on.heldout, &choices).unwrap(),
                want
            );
        }
    }
    let stats = p_on.evaluator.heldout_stats();
    assert!(
        stats.blocks_reused > 0 && stats.segments_reused > 0,
        "{stats:?}"
    );
    assert_eq!(p_off.evaluator.heldout_stats().blocks_reused, 0);
}

#[test]
fn a_full_score_continues_its_screening_score_bit_for_bit() {
    let m = model();
    let mut cfg = small_tensor_config();
    cfg.data.screen_windows = 1;
    let (p_on, p_off) = on_and_off(&m, &cfg);
    let q = QuantProblem::new(&p_on, &cfg).unwrap();
    for g in genomes(&q) {
        let choices = q.space.tensor_choices(&m, &g);
        let screened = p_on.evaluator.score(&choices, 1).unwrap();
        assert_eq!(screened, p_off.evaluator.score(&choices, 1).unwrap());
        // The full score folds windows 1..3 onto the screening's sums.
        let full = p_on.evaluator.score(&choices, 3).unwrap();
        assert_eq!(full, p_off.evaluator.score(&choices, 3).unwrap());
        assert_eq!(full.tokens, 3 * screened.tokens);
    }
    let stats = p_on.evaluator.prefix_stats();
    assert_eq!(stats.segments_reused, 6, "{stats:?}");
    assert!(stats.blocks_reused > 0, "{stats:?}");
}

#[test]
fn surrogate_rejected_plans_never_reach_the_front() {
    let m = model();
    let (calib, heldout) = texts();
    let mut cfg = small_tensor_config();
    cfg.data.screen_windows = 1;
    cfg.evolution.generations = 4;
    let o = search::run(&m, &calib, &heldout, &cfg, None).unwrap();
    let s = o.surrogate_stats;
    assert!(s.rejected > 0, "the surrogate screened nothing: {s:?}");
    assert!(s.spearman.is_some_and(|r| r > 0.5), "{s:?}");
    assert!(!o.front.is_empty());
    for f in &o.front {
        assert!(f.scored.full && !f.scored.predicted, "{:?}", f.genome);
    }
    // No trial of the journal is a surrogate guess.
    assert!(o.evaluations.iter().all(|e| !e.scored.predicted));
    // The same search without the surrogate scores more plans.
    cfg.caches.surrogate = false;
    let plain = search::run(&m, &calib, &heldout, &cfg, None).unwrap();
    assert_eq!(plain.surrogate_stats.rejected, 0);
    let scored =
        |o: &search::SearchOutcome| o.fitness_stats.screenings + o.fitness_stats.full_evaluations;
    assert!(
        scored(&o) < scored(&plain),
        "{:?} vs {:?}",
        o.fitness_stats,
        plain.fitness_stats
    );
}

#[test]
fn no_cache_gives_the_same_front() {
    // Without screening (screen windows = calibration windows) the caches are pure memos,
    // so the whole outcome must be identical with them off.
    let m = model();
    let (calib, heldout) = texts();
    let on = small_config();
    let a = search::run(&m, &calib, &heldout, &on, None).unwrap();
    let b = search::run(&m, &calib, &heldout, &caches_off(&on), None).unwrap();
    let key = |o: &search::SearchOutcome| {
        o.front
            .iter()
            .map(|f| (f.genome.clone(), f.scored.clone(), f.heldout))
            .collect::<Vec<_>>()
    };
    assert!(!a.front.is_empty());
    assert_eq!(key(&a), key(&b));
    assert_eq!(a.recommended, b.recommended);
    assert!(a.fitness_stats.hits > 0);
    assert_eq!(b.fitness_stats.hits, 0);
}

#[test]
fn screening_skips_only_plans_the_archive_dominates() {
    let m = model();
    let (calib, heldout) = texts();
    let mut cfg = small_config();
    cfg.data.screen_windows = 1;
    let p = search::prepare(&m, &calib, &heldout, &cfg).unwrap();
    let q = QuantProblem::new(&p, &cfg).unwrap();
    let g = genomes(&q).remove(0);
    // Empty archive: nothing to compare with, so the full score.
    let s = q.evaluate_one(&g, &[]).unwrap();
    assert!(s.full);
    // An archive point better everywhere: the screened score, not the full one.
    let g2 = genomes(&q).remove(5);
    let tiny = vec![vec![0.0, 1.0, 1e-9, 1e-9]];
    let screened = q.evaluate_one(&g2, &tiny).unwrap();
    assert!(!screened.full);
    assert_eq!(q.fitness_stats().screened_out, 1);
    // An archive point worse in size: the plan could enter the front, so full.
    let worse = vec![vec![0.0, 1e30, 1e-9, 1e-9]];
    assert!(q.evaluate_one(&g2, &worse).unwrap().full);
}

#[test]
fn a_plan_skipped_by_the_screening_tolerance_is_never_archived() {
    use evo::{EvalContext, Genome, Individual, Problem};
    let m = model();
    let (calib, heldout) = texts();
    let mut cfg = small_config();
    cfg.data.screen_windows = 1;
    let p = search::prepare(&m, &calib, &heldout, &cfg).unwrap();
    let g = genomes(&QuantProblem::new(&p, &cfg).unwrap()).remove(4);
    let s = QuantProblem::new(&p, &cfg).unwrap().full(&g).unwrap();
    // An archive plan with g's KL but 5% larger: it does not dominate g, but it is
    // within a 90% tolerance of g's optimistic screened score in every objective.
    let mut near = s.objectives();
    near[1] *= 1.05;
    let archive = vec![Individual {
        genome: Genome(vec![0; g.len()]),
        objectives: near,
        violation: 0.0,
        estimated: false,
    }];
    let ctx = EvalContext {
        generation: 1,
        archive: &archive,
    };
    let evaluate = |epsilon: f64| {
        let mut c = cfg.clone();
        c.caches.epsilon = [epsilon; 4];
        let q = QuantProblem::new(&p, &c).unwrap();
        let ev = q.evaluate(&[Genome(g.clone())], &ctx).unwrap().remove(0);
        (ev, q.fitness_stats())
    };
    // Without a tolerance the plan could enter the front: fully scored, archivable.
    let (exact, stats) = evaluate(0.0);
    assert!(!exact.estimated && stats.screened_out == 0, "{stats:?}");
    // With it the plan is skipped after screening: an estimate, which the archive refuses.
    let (skipped, stats) = evaluate(0.9);
    assert!(skipped.estimated, "{skipped:?}");
    assert_eq!(stats.screened_out, 1);
    let mut a = evo::Archive::new();
    let ind = Individual {
        genome: Genome(g.clone()),
        objectives: skipped.objectives,
        violation: skipped.violation,
        estimated: skipped.estimated,
    };
    assert!(!a.insert(&ind));
}

#[test]
fn user_limits_enter_pricing() {
    let m = model();
    let cfg = small_config();
    let choices = qevo::plan::fp_choices(&m);
    let free = price(
        &m,
        &choices,
        &cfg.target,
        &cfg.workload,
        &UserLimits::default(),
        None,
    )
    .unwrap();
    let tight = UserLimits {
        max_size_mb: Some(1.0),
        max_kl: Some(0.5),
        ..Default::default()
    };
    let p = price(&m, &choices, &cfg.target, &cfg.workload, &tight, Some(0.25)).unwrap();
    let size = p
        .checks
        .iter()
        .find(|c| c.name == "max_size_mb (user)")
        .unwrap();
    assert!(!size.pass);
    assert_eq!(size.value, qevo::plan::fp_bytes(&m) as f64 / 1e6);
    let kl = p.checks.iter().find(|c| c.name == "max_kl (user)").unwrap();
    assert!(kl.pass);
    // The violation grows by exactly the size excess.
    let excess = (size.value - 1.0) / 1.0;
    assert!((p.violation - free.violation - excess).abs() < 1e-12);
}

#[test]
fn convergence_record_survives_resume() {
    let m = model();
    let (calib, heldout) = texts();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config();
    cfg.data.screen_windows = 1;
    let whole = search::run(&m, &calib, &heldout, &cfg, None).unwrap();

    cfg.checkpoint.path = Some(dir.path().join("checkpoint.json"));
    // Stop after generation 1, then resume to the end.
    let stop: search::Progress = Box::new(|r| {
        if r.generation >= 1 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    search::run(&m, &calib, &heldout, &cfg, Some(stop)).unwrap();
    cfg.checkpoint.resume = true;
    let resumed = search::run(&m, &calib, &heldout, &cfg, None).unwrap();

    assert_eq!(
        whole.convergence.len(),
        cfg.evolution.generations as usize + 1
    );
    assert_eq!(resumed.convergence, whole.convergence);
    assert_eq!(resumed.history, whole.history);
    assert_eq!(resumed.fitness_stats, whole.fitness_stats);
    assert_eq!(resumed.surrogate_stats, whole.surrogate_stats);
}

#[test]
fn resume_without_a_checkpoint_is_refused() {
    let m = model();
    let (calib, heldout) = texts();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config();
    cfg.checkpoint.path = Some(dir.path().join("checkpoint.json"));
    cfg.checkpoint.resume = true;
    let Err(e) = search::run(&m, &calib, &heldout, &cfg, None) else {
        panic!("a resume without a checkpoint ran");
    };
    let e = e.to_string();
    assert!(e.contains("resume") && e.contains("no checkpoint"), "{e}");
}

#[test]
fn random_search_runs_without_the_lagrangian_baseline() {
    let m = model();
    let (calib, heldout) = texts();
    let mut cfg = small_config();
    cfg.evolution.generations = 1;
    cfg.baselines.lagrangian = false;
    cfg.baselines.random_search = true;
    let o = search::run(&m, &calib, &heldout, &cfg, None).unwrap();
    assert!(o.lagrangian.is_empty());
    assert!(
        !o.random.is_empty(),
        "--no-baselines --random-search skipped random search"
    );
    assert!(!o.matched.is_empty());
}

/// Scores jobs on a setup of its own (built from the same config, as a remote worker
/// does), in reverse chunks of three, so order and partition differ from the local run.
struct OtherSetup<'a> {
    problem: QuantProblem<'a>,
    batches: std::sync::Mutex<usize>,
}

impl Executor for OtherSetup<'_> {
    fn start(&self, fingerprint: &str) -> qevo::Result<()> {
        match self.problem.fingerprint() == fingerprint {
            true => Ok(()),
            false => Err(qevo::Error::Executor("fingerprint differs".into())),
        }
    }
    fn score(&self, jobs: &[Job]) -> qevo::Result<Vec<Scored>> {
        *self.batches.lock().unwrap() += 1;
        let mut out: Vec<Option<Scored>> = vec![None; jobs.len()];
        let chunks: Vec<_> = (0..jobs.len())
            .collect::<Vec<_>>()
            .chunks(3)
            .map(<[usize]>::to_vec)
            .collect();
        for chunk in chunks.into_iter().rev() {
            for i in chunk {
                out[i] = Some(self.problem.score_job(&jobs[i])?);
            }
        }
        Ok(out.into_iter().map(Option::unwrap).collect())
    }
}

#[test]
fn an_executor_on_another_setup_gives_the_local_front() {
    let m = model();
    let (calib, heldout) = texts();
    let mut cfg = small_config();
    cfg.data.screen_windows = 1;
    cfg.baselines.lagrangian = false;
    let local = search::run(&m, &calib, &heldout, &cfg, None).unwrap();
    let other = search::prepare(&m, &calib, &heldout, &cfg).unwrap();
    let x = OtherSetup {
        problem: QuantProblem::new(&other, &cfg).unwrap(),
        batches: std::sync::Mutex::new(0),
    };
    let hooks = search::Hooks {
        progress: None,
        executor: Some(&x),
    };
    let remote = search::run_with(&m, &calib, &heldout, &cfg, hooks).unwrap();
    assert!(*x.batches.lock().unwrap() > cfg.evolution.generations as usize);
    let front = |o: &search::SearchOutcome| serde_json::to_string(&o.front).unwrap();
    assert_eq!(front(&local), front(&remote));
    assert_eq!(local.fitness_stats, remote.fitness_stats);
    assert_eq!(local.evaluations, remote.evaluations);
    assert!(!local.evaluations.is_empty());
}

#[test]
fn an_executor_on_a_different_setup_is_refused() {
    let m = model();
    let (calib, heldout) = texts();
    let cfg = small_config();
    let mut other_cfg = small_config();
    other_cfg.data.calib_windows = 2;
    other_cfg.data.screen_windows = 2;
    let other = search::prepare(&m, &calib, &heldout, &other_cfg).unwrap();
    let x = OtherSetup {
        problem: QuantProblem::new(&other, &other_cfg).unwrap(),
        batches: std::sync::Mutex::new(0),
    };
    let hooks = search::Hooks {
        progress: None,
        executor: Some(&x),
    };
    let e = search::run_with(&m, &calib, &heldout, &cfg, hooks)
        .err()
        .unwrap();
    assert!(e.to_string().contains("fingerprint differs"), "{e}");
    assert_eq!(*x.batches.lock().unwrap(), 0);
}

#[test]
fn a_job_outside_the_space_is_an_error_not_a_panic() {
    let m = model();
    let (calib, heldout) = texts();
    let cfg = small_config();
    let p = search::prepare(&m, &calib, &heldout, &cfg).unwrap();
    let q = QuantProblem::new(&p, &cfg).unwrap();
    let e = q
        .score_job(&Job {
            genome: vec![u16::MAX; 2],
            full: true,
        })
        .unwrap_err();
    assert!(e.to_string().contains("genome"), "{e}");
}

/// `--tie-fused`: q/k/v and gate/up are one gene each, so every plan the search can make
/// gives vLLM's fused modules one scheme.
#[test]
fn tie_fused_gives_each_fused_module_one_gene() {
    use qevo::export::{ct_choice, loader_notes};
    use qevo::search::space::{parse_formats, SearchSpace};
    let m = model();
    let mut cfg = small_tensor_config();
    cfg.space.formats = parse_formats("int4-sym-g128,int8-sym-channel,int4-asym-g128").unwrap();
    let untied = SearchSpace::new(&m, &cfg.space, &cfg.target, &[]).unwrap();
    cfg.space.tie_qkv = true;
    cfg.space.tie_gate_up = true;
    let tied = SearchSpace::new(&m, &cfg.space, &cfg.target, &[]).unwrap();
    let blocks = m.n_blocks();
    // Per block: q, k, v, o, gate, up, down become qkv, o, gate_up, down.
    assert_eq!(untied.n_genes() - tied.n_genes(), 3 * blocks);
    assert!(tied.units.iter().any(|u| u.name == "blk.0.attn_qkv"));
    assert!(tied.units.iter().any(|u| u.name == "blk.0.ffn_gate_up"));
    let fused_notes = |space: &SearchSpace, genome: &[u16]| {
        let plan = space.plan(&m, genome);
        let choices = plan.per_tensor(&m).unwrap();
        let schemes: Vec<_> = m
            .tensors
            .iter()
            .zip(&choices)
            .map(|(i, c)| ct_choice(&m, i, c).ok().flatten())
            .collect();
        loader_notes(&m, &schemes)
            .into_iter()
            .filter(|n| n.contains("fused"))
            .count()
    };
    // Unit u takes choice u mod its count: neighbours differ.
    let spread = |space: &SearchSpace| -> Vec<u16> {
        (0..space.n_genes())
            .map(|u| (u % space.choices[u].len()) as u16)
            .collect()
    };
    assert!(fused_notes(&untied, &spread(&untied)) > 0);
    assert_eq!(fused_notes(&tied, &spread(&tied)), 0);
}

/// The scaled table measures two probes per unit and predicts the rest from weight error;
/// it must order the cells as the measured table does, or its Lagrangian seeds and
/// surrogate would point the search the wrong way.
#[test]
fn a_scaled_sensitivity_table_ranks_cells_as_the_measured_one_does() {
    use qevo::search::sensitivity::sensitivity;
    use qevo::search::surrogate::spearman;
    let model = model();
    let (calib, heldout) = texts();
    let mut cfg = small_tensor_config();
    cfg.data.seq_len = 64;
    // Weight-only choices: activation choices are always measured.
    cfg.space.act_bits = vec![16];
    let p = search::prepare(&model, &calib, &heldout, &cfg).unwrap();
    let importance = qevo::calib::collect_imatrix(&model, &p.evaluator.reference.windows)
        .unwrap()
        .for_model(&model)
        .unwrap();
    let measured = sensitivity(&p.evaluator, &p.space, 2, None, None).unwrap();
    let scaled = sensitivity(&p.evaluator, &p.space, 2, Some(&importance), None).unwrap();
    let (m, all) = scaled.measured_count();
    assert_eq!(measured.measured_count(), (all, all));
    assert!(m * 2 < all, "{m} of {all} cells measured");
    // Measured cells are the same measurement.
    for (u, row) in scaled.measured.iter().enumerate() {
        for (c, &was) in row.iter().enumerate() {
            if was {
                assert_eq!(scaled.kl[u][c], measured.kl[u][c]);
            }
        }
    }
    let pairs: Vec<(f64, f64)> = measured
        .kl
        .iter()
        .flatten()
        .zip(scaled.kl.iter().flatten())
        .map(|(&a, &b)| (a, b))
        .collect();
    let rho = spearman(&pairs).unwrap();
    // 0.997 when written (60 of 510 cells measured).
    assert!(rho > 0.98, "Spearman {rho} ({m} of {all} cells measured)");
    // A deadline already passed: one batch measured (one cell per thread), every other
    // cell predicted, still finite and still ordered like the measured table.
    let cut = sensitivity(
        &p.evaluator,
        &p.space,
        2,
        Some(&importance),
        Some(std::time::Instant::now()),
    )
    .unwrap();
    let (cm, call) = cut.measured_count();
    assert!(cm < m && call == all, "{cm} of {call} measured");
    assert!(cut.kl.iter().flatten().all(|k| k.is_finite() && *k >= 0.0));
    let pairs: Vec<(f64, f64)> = measured
        .kl
        .iter()
        .flatten()
        .zip(cut.kl.iter().flatten())
        .map(|(&a, &b)| (a, b))
        .collect();
    let rho = spearman(&pairs).unwrap();
    // 0.89 with one batch of two cells (two threads): the weight errors still order
    // each unit's choices, and the borrowed gain the units.
    assert!(rho > 0.8, "Spearman {rho} cut at {cm} of {call} cells");
}

/// A size-limited search is judged at its limit: the matched rows end with one at the
/// user's size, against the best uniform plan within it and the Lagrangian plan at it.
#[test]
fn the_size_limit_is_a_matched_size() {
    let m = model();
    let (calib, heldout) = texts();
    let mut cfg = small_config();
    cfg.evolution.generations = 1;
    cfg.limits.max_size_mb = Some(2.75);
    let o = search::run(&m, &calib, &heldout, &cfg, None).unwrap();
    let row = o.matched.last().unwrap();
    assert!(row.uniform.starts_with("limit ("), "{row:?}");
    assert_eq!(row.size_bytes, 2_750_000);
    let uniform_name = &row.uniform["limit (".len()..row.uniform.len() - 1];
    let uniform = o.uniform.iter().find(|u| u.name == uniform_name).unwrap();
    assert!(uniform.scored.size_bytes <= row.size_bytes);
    assert_eq!(row.uniform_kl, uniform.scored.metrics.kl);
    let lag = o
        .lagrangian
        .iter()
        .find(|b| b.name == format!("lagrangian @ {}", row.uniform))
        .unwrap();
    assert!(lag.scored.size_bytes <= row.size_bytes);
    assert_eq!(row.lagrangian_kl, Some(lag.scored.metrics.kl));
    // The uniform plan within the limit is a seed, so the front is never worse than it.
    assert!(row.evolved_kl.unwrap() <= row.uniform_kl);
}

/// Bytes of `format` on every tensor: the size limits the refine tests search at.
fn uniform_bytes(m: &Model, format: &str) -> u64 {
    let f = qevo::quant::WeightFormat::parse(format).unwrap();
    let plan = qevo::plan::TensorPlan::uniform(m, f, 16).unwrap();
    let choices: Vec<_> = m
        .tensors
        .iter()
        .map(|t| *plan.choice(&t.name).unwrap())
        .collect();
    price(
        m,
        &choices,
        &small_config().target,
        &small_config().workload,
        &UserLimits::default(),
        None,
    )
    .unwrap()
    .tensor_bytes
}

/// `small_tensor_config` for a weights-only runtime, limited to `bytes`, with a
/// validation slice.
fn limited_config(bytes: u64) -> SearchConfig {
    let mut cfg = small_tensor_config();
    cfg.space.act_bits = vec![16];
    cfg.data.validation_windows = 2;
    cfg.limits.max_size_mb = Some(bytes as f64 / 1e6);
    cfg
}

/// The issue this guards: at a size limit the evolution's plan stopped short of the
/// limit and lost to the search-free Lagrangian plan there. The recommended plan must
/// fit the limit and be no worse than the Lagrangian plan at it, on the calibration
/// windows and on the validation slice, whatever the limit.
#[test]
fn search_at_a_size_limit_is_never_worse_than_the_lagrangian_plan() {
    let m = model();
    let (calib, heldout) = texts();
    for format in ["q2_k", "q4_k"] {
        let limit = uniform_bytes(&m, format);
        let cfg = limited_config(limit);
        let o = search::run(&m, &calib, &heldout, &cfg, None).unwrap();
        let rec = o.chosen().unwrap();
        assert_eq!(o.recommended.map(|i| &o.front[i].genome), Some(&rec.genome));
        assert!(rec.scored.size_bytes <= limit, "{format}: {rec:?}");
        assert!(rec.scored.violation <= 0.0, "{format}");
        let r = o
            .refine
            .as_ref()
            .expect("a size limit runs the refine stage");
        let lag = r.lagrangian.expect("the Lagrangian plan fits the limit");
        let validation = rec
            .validation
            .expect("the recommended plan has a validation score");
        assert!(rec.scored.metrics.kl <= lag.kl, "{format}: {r:?}");
        assert!(validation.kl <= lag.validation_kl, "{format}: {r:?}");
        assert_eq!(
            (r.chosen.kl, r.chosen.validation_kl, r.chosen.heldout_kl),
            (rec.scored.metrics.kl, validation.kl, rec.heldout.kl)
        );
        // The compare stage scores the Lagrangian plan at the limit on its own.
        let row = o.matched.last().unwrap();
        assert!(row.uniform.starts_with("limit ("), "{row:?}");
        assert_eq!(row.lagrangian_kl, Some(lag.kl));
        assert!(row.evolved_kl.unwrap() <= lag.kl);
        assert!(r.evaluations > 0 && o.stage_seconds.refine > 0.0);
    }
}

/// A GGUF runs weights only: a search for one offers, scores and chooses no
/// activation-quantizing choice, so neither the space nor the sensitivity table has a
/// cell with quantized activations.
#[test]
fn weights_only_search_scores_no_activation_cells() {
    let m = model();
    let (calib, heldout) = texts();
    let mut cfg = small_config();
    let full_space = search::prepare(&m, &calib, &heldout, &cfg).unwrap().space;
    assert!(full_space.choices.iter().flatten().any(|c| c.act_bits < 16));
    cfg.space.act_bits =
        qevo::search::space::parse_act_bits(search::defaults::WEIGHTS_ONLY_ACT_BITS).unwrap();
    assert!(cfg.space.weights_only());
    let o = search::run(&m, &calib, &heldout, &cfg, None).unwrap();
    assert!(o.space.choices.iter().flatten().all(|c| c.act_bits == 16));
    let cells: usize = o.sensitivity.kl.iter().map(Vec::len).sum();
    let weight_choices = full_space
        .choices
        .iter()
        .flatten()
        .filter(|c| c.act_bits == 16);
    assert_eq!(cells, weight_choices.count());
    for f in &o.front {
        let choices = o.space.tensor_choices(&m, &f.genome);
        assert!(choices.iter().all(|c| c.act_bits == 16));
    }
    // The setting the `qevo gguf` front end sets.
    let settings = search::Settings {
        act_bits: search::defaults::WEIGHTS_ONLY_ACT_BITS.into(),
        ..Default::default()
    };
    assert!(settings.resolve(&m).unwrap().space.weights_only());
}

/// The refine stage keeps the search's promises: the same seed gives the same front,
/// recommendation and refine record on one thread as on several, and a search stopped
/// and resumed refines to the same plan as an uninterrupted one.
#[test]
fn a_refined_search_is_the_same_on_any_thread_count_and_after_resume() {
    let m = model();
    let (calib, heldout) = texts();
    let mut cfg = limited_config(uniform_bytes(&m, "q3_k"));
    let key = |o: &search::SearchOutcome| {
        let r = o.refine.clone().unwrap();
        let front: Vec<_> = o
            .front
            .iter()
            .map(|f| (f.genome.clone(), f.scored.clone()))
            .collect();
        (front, o.recommended, r, o.history.clone())
    };
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| search::run(&m, &calib, &heldout, &cfg, None).unwrap())
    };
    let whole = key(&on(3));
    assert_eq!(key(&on(1)), whole);

    let dir = tempfile::tempdir().unwrap();
    cfg.checkpoint.path = Some(dir.path().join("checkpoint.json"));
    let stop: search::Progress = Box::new(|r| match r.generation >= 1 {
        true => ControlFlow::Break(()),
        false => ControlFlow::Continue(()),
    });
    let stopped = search::run(&m, &calib, &heldout, &cfg, Some(stop)).unwrap();
    assert!(
        stopped.refine.is_none(),
        "a stopped search writes what it had"
    );
    cfg.checkpoint.resume = true;
    assert_eq!(
        key(&search::run(&m, &calib, &heldout, &cfg, None).unwrap()),
        whole
    );
}
