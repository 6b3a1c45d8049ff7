//! A search checkpoint: parsed, checked against the search it claims to continue, and
//! resumed for one generation. The problem takes its gene space, objective count,
//! population size and seed from the checkpoint itself (bounded), so fuzzed files get
//! past the "not this search" checks into the restored population, archive, history
//! and RNG state, which is where a damaged file could do harm.
#![no_main]

use evo::{
    BoxError, Checkpoint, EvalContext, Evaluation, GeneSpace, Genome, Nsga2, Problem, RunOptions,
    Termination,
};
use libfuzzer_sys::fuzz_target;

/// Deterministic objectives with a trade-off between them; nothing about it matters
/// except that it is cheap and accepts any genome of its space.
struct Toy {
    space: GeneSpace,
    n_objectives: usize,
}

impl Problem for Toy {
    fn space(&self) -> &GeneSpace {
        &self.space
    }
    fn n_objectives(&self) -> usize {
        self.n_objectives
    }
    fn evaluate(&self, batch: &[Genome], _: &EvalContext) -> Result<Vec<Evaluation>, BoxError> {
        let levels = self.space.levels();
        Ok(batch
            .iter()
            .map(|g| {
                let obj = (0..self.n_objectives)
                    .map(|k| {
                        g.levels()
                            .iter()
                            .zip(levels)
                            .map(|(&v, &n)| f64::from((v as u32 * (k as u32 + 1)) % u32::from(n)))
                            .sum()
                    })
                    .collect();
                Evaluation::feasible(obj)
            })
            .collect())
    }
}

fuzz_target!(|data: &[u8]| {
    let p = qevo_fuzz::put("checkpoint.json", data);
    let Ok(ck) = Checkpoint::load(&p) else {
        return;
    };
    // Bounds keep one execution short; they are the harness's, not the file format's.
    if ck.levels.len() > 512
        || !(1..=6).contains(&ck.n_objectives)
        || !(2..=64).contains(&ck.pop_size)
    {
        return;
    }
    let Ok(space) = GeneSpace::new(ck.levels.clone()) else {
        return;
    };
    let toy = Toy {
        space,
        n_objectives: ck.n_objectives,
    };
    let algo = Nsga2::new(ck.pop_size)
        .with_termination(Termination::generations(ck.generation.saturating_add(1)))
        .with_reference_point(vec![1e6; ck.n_objectives]);
    let options = RunOptions {
        resume: Some(p.clone()),
        ..RunOptions::default()
    };
    let _ = algo.run(&toy, ck.seed, options);
});
