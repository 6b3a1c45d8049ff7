//! The search's caches and surrogate, off against on (issue 14, item 3): the same search
//! (same model, seed, generations and population, tensor units) run twice in one process,
//! first with `caches.enabled = false` (every offspring fully scored, no memo, no prefix
//! cache, no surrogate), then with everything on. Printed:
//!
//! - the evolution's seconds (generations 1..N, from the progress hook: preparation,
//!   seeding and the final re-scores are the same work in both runs and are left out), in
//!   wall and in process CPU time, and the speed-up as a ratio of the two runs;
//! - front quality: the archive's hypervolume (same reference point: it comes from the
//!   uniform plans, which score the same bits either way) and the evolved plan's held-out
//!   KL at every uniform plan's size, as a ratio on / off;
//! - the counters behind the speed-up: fitness memo, surrogate rejections and its rank
//!   correlation on plans it did not train on, prefix-cache block reuse, continued
//!   screening scores.
//!
//! Run: `cargo bench -p qevo --bench search_caches [-- GENERATIONS [MODEL]]` (defaults: 40
//! generations, the embedded model). `QEVO_BENCH_UNIT` sets the unit mode (tensor).

mod common;

use common::cpu_seconds;
use qevo::model::Model;
use qevo::search::{self, space::UnitMode, SearchConfig, SearchOutcome};
use std::cell::RefCell;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

struct Run {
    outcome: SearchOutcome,
    /// Wall and CPU seconds of generations 1..N.
    wall: f64,
    cpu: f64,
}

/// One search; the clock starts when generation 0 is reported.
fn run(model: &Model, cfg: &SearchConfig) -> Run {
    let marks: RefCell<Vec<(f64, f64)>> = RefCell::new(Vec::new());
    let t0 = Instant::now();
    let progress = Box::new(|_: &evo::GenerationRecord| {
        marks
            .borrow_mut()
            .push((t0.elapsed().as_secs_f64(), cpu_seconds()));
        ControlFlow::Continue(())
    });
    let calib = qevo::assets::CALIB_TEXT;
    let heldout = qevo::assets::HELDOUT_TEXT;
    let outcome = search::run(model, calib, heldout, cfg, Some(progress)).expect("search");
    let m = marks.into_inner();
    let (first, last) = (m[0], m[m.len() - 1]);
    Run {
        outcome,
        wall: last.0 - first.0,
        cpu: last.1 - first.1,
    }
}

fn geo_mean(v: &[f64]) -> f64 {
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len().max(1) as f64).exp()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let generations: u64 = args.first().map_or(40, |g| g.parse().expect("generations"));
    let dir = std::env::temp_dir().join("qevo-bench-search-caches");
    let path = match args.get(1) {
        Some(p) => PathBuf::from(p),
        None => qevo::assets::default_model_dir(&dir).expect("embedded model"),
    };
    let model = Model::load(&path).expect("model");
    let unit = std::env::var("QEVO_BENCH_UNIT").unwrap_or_else(|_| "tensor".into());
    let mut cfg = SearchConfig::with_defaults().expect("defaults");
    cfg.space.unit = UnitMode::parse(&unit).expect("unit");
    cfg.evolution.generations = generations;
    cfg.baselines.lagrangian = true;
    if let Ok(e) = std::env::var("QEVO_BENCH_EPSILON") {
        let v: Vec<f64> = e.split(',').map(|x| x.parse().expect("epsilon")).collect();
        cfg.caches.epsilon = [v[0], v[1], v[2], v[3]];
    }
    let mut off_cfg = cfg.clone();
    off_cfg.caches.enabled = false;
    println!(
        "{} · {unit} units · {} × {generations} · seed {}",
        path.display(),
        cfg.evolution.population,
        cfg.evolution.seed
    );
    let off = run(&model, &off_cfg);
    let on = run(&model, &cfg);
    report(&off, &on);
}

fn report(off: &Run, on: &Run) {
    let hv = |r: &Run| {
        r.outcome
            .history
            .last()
            .and_then(|h| h.hypervolume)
            .unwrap_or(f64::NAN)
    };
    println!("| | caches off | caches on | on / off |");
    println!("|---|---|---|---|");
    let row = |what: &str, a: f64, b: f64| {
        println!("| {what} | {a:.3} | {b:.3} | {:.3} |", b / a);
    };
    row("evolution wall s", off.wall, on.wall);
    row("evolution CPU s", off.cpu, on.cpu);
    row("hypervolume (e10)", hv(off) / 1e10, hv(on) / 1e10);
    let ratios: Vec<f64> = off
        .outcome
        .matched
        .iter()
        .zip(&on.outcome.matched)
        .filter_map(|(a, b)| Some(b.evolved_heldout_kl? / a.evolved_heldout_kl?))
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    println!(
        "\nspeed-up: {:.2}× wall, {:.2}× CPU; held-out KL at the {} matched sizes, on / off: geometric mean {:.3}, worst {:.3}",
        off.wall / on.wall,
        off.cpu / on.cpu,
        ratios.len(),
        geo_mean(&ratios),
        ratios.iter().copied().fold(0.0, f64::max)
    );
    for (a, b) in off.outcome.matched.iter().zip(&on.outcome.matched) {
        println!(
            "  {:8} {:.3} MB  off {:.5}  on {:.5}",
            a.uniform,
            a.size_bytes as f64 / 1e6,
            a.evolved_heldout_kl.unwrap_or(f64::NAN),
            b.evolved_heldout_kl.unwrap_or(f64::NAN)
        );
    }
    let (f, s, p) = (
        &on.outcome.fitness_stats,
        &on.outcome.surrogate_stats,
        &on.outcome.prefix_stats,
    );
    println!(
        "caches on: fitness memo {} / {} lookups; {} full scores, {} screenings, {} screened out; surrogate rejected {}, Spearman {} on {} unseen plans; prefix cache reused {:.1}% of block work; {} full scores continued their screening",
        f.hits,
        f.lookups,
        f.full_evaluations,
        f.screenings,
        f.screened_out,
        s.rejected,
        s.spearman.map_or("-".into(), |r| format!("{r:.4}")),
        s.checked,
        100.0 * p.block_reuse(),
        p.segments_reused
    );
    let archived = |r: &Run| {
        r.outcome
            .history
            .iter()
            .skip(1)
            .map(|h| h.archived)
            .sum::<usize>()
    };
    println!(
        "caches off: {} full scores; offspring that entered the archive: off {}, on {}",
        off.outcome.fitness_stats.full_evaluations,
        archived(off),
        archived(on)
    );
}
