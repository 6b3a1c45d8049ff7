//! Evaluations to equal front quality, evolution against random search (issue 14, item
//! 4). The evolution runs N generations; random search (`search::baselines::
//! random_search`, screened and scored like the evolution's offspring) then draws K times
//! the evolution's evaluation count from the same prepared setup. Both fronts are
//! measured by the same hypervolume (the search's reference point, from the uniform
//! plans). Printed: the evolution's hypervolume after each generation, and the number of
//! random evaluations whose front first reaches it ("not reached" within the K× budget).
//!
//! Run: `cargo bench -p qevo --bench search_vs_random [-- GENERATIONS [K [MODEL]]]`
//! (defaults: 20 generations, K = 5, the embedded model; tensor units).

use evo::dominance::dominates;
use evo::hypervolume;
use qevo::model::Model;
use qevo::search::{self, baselines::random_search, problem::QuantProblem, SearchConfig};
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let generations: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(20);
    let k: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let dir = std::env::temp_dir().join("qevo-bench-search-vs-random");
    let path = match args.get(2) {
        Some(p) => PathBuf::from(p),
        None => qevo::assets::default_model_dir(&dir).expect("embedded model"),
    };
    let model = Model::load(&path).expect("model");
    let mut cfg = SearchConfig::with_defaults().expect("config");
    cfg.space.unit = search::space::UnitMode::Tensor;
    cfg.evolution.generations = generations;
    cfg.baselines.lagrangian = false;
    let (calib, heldout) = (qevo::assets::CALIB_TEXT, qevo::assets::HELDOUT_TEXT);
    let ga = search::run(&model, calib, heldout, &cfg, None).expect("search");
    let ga_evals = ga.history.last().map_or(0, |r| r.evaluations);

    let prepared = search::prepare(&model, calib, heldout, &cfg).expect("prepare");
    let problem = QuantProblem::new(&prepared, &cfg).expect("problem");
    let seeded = search::seed(&prepared, &problem, &cfg, &Default::default()).expect("seed");
    let reference = seeded.reference_point.clone();
    let budget = (ga_evals * k) as usize;
    let random = random_search(&problem, budget, cfg.evolution.seed).expect("random search");

    // The random front's hypervolume after each of its evaluations (index = draws so far).
    let mut front: Vec<Vec<f64>> = Vec::new();
    let mut curve: Vec<(usize, f64)> = Vec::new();
    for p in &random {
        let draw: usize = p.name.trim_start_matches("random #").parse().unwrap_or(0) + 1;
        if p.scored.violation > 0.0 {
            continue;
        }
        let o = p.scored.objectives();
        if front.iter().any(|a| a == &o || dominates(a, &o)) {
            continue;
        }
        front.retain(|a| !dominates(&o, a));
        front.push(o);
        curve.push((draw, hypervolume(&front, &reference)));
    }
    let reached = |hv: f64| curve.iter().find(|c| c.1 >= hv).map(|c| c.0);
    println!(
        "search vs random: {} tensor units, {} generations x {}, random budget {}x = {} draws",
        problem.space.units.len(),
        generations,
        cfg.evolution.population,
        k,
        budget
    );
    println!(
        "random front: {} plans, hypervolume {:.4e}",
        front.len(),
        curve.last().map_or(0.0, |c| c.1)
    );
    println!("gen  evaluations  hypervolume  random draws to reach it  ratio");
    for r in &ga.history {
        let hv = r.hypervolume.unwrap_or(0.0);
        let (draws, ratio) = match reached(hv) {
            Some(d) => (
                d.to_string(),
                format!("{:.1}x", d as f64 / r.evaluations as f64),
            ),
            None => (
                format!("not within {budget}"),
                format!("> {:.1}x", budget as f64 / r.evaluations as f64),
            ),
        };
        println!(
            "{:>3}  {:>11}  {:>11.4e}  {:>24}  {}",
            r.generation, r.evaluations, hv, draws, ratio
        );
    }
}
