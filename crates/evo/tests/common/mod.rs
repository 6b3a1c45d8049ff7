//! Shared helpers for the integration tests: a thread-splitting problem wrapper and the
//! search configurations the determinism and resume tests compare.
#![allow(dead_code)]

use evo::operators::{CrossoverKind, GeneMutation, LayerwiseCrossover};
use evo::problems::{HashProblem, Knapsack};
use evo::{
    BoxError, EvalContext, Evaluation, GeneSpace, Genome, Nsga2, Problem, SearchResult, Termination,
};

/// Evaluates each batch on `threads` scoped threads, starting the chunks in reverse
/// order, and reassembles the results in batch order.
pub struct Threaded<P> {
    pub inner: P,
    pub threads: usize,
}

impl<P: Problem + Sync> Problem for Threaded<P> {
    fn space(&self) -> &GeneSpace {
        self.inner.space()
    }
    fn n_objectives(&self) -> usize {
        self.inner.n_objectives()
    }
    fn evaluate(&self, batch: &[Genome], ctx: &EvalContext) -> Result<Vec<Evaluation>, BoxError> {
        let chunk = batch.len().div_ceil(self.threads.max(1)).max(1);
        let chunks: Vec<&[Genome]> = batch.chunks(chunk).collect();
        let mut parts: Vec<Option<Vec<Evaluation>>> = vec![None; chunks.len()];
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .enumerate()
                .rev()
                .map(|(i, c)| {
                    let inner = &self.inner;
                    let ctx = EvalContext {
                        generation: ctx.generation,
                        archive: ctx.archive,
                    };
                    (
                        i,
                        s.spawn(move || inner.evaluate(c, &ctx).map_err(|e| e.to_string())),
                    )
                })
                .collect();
            for (i, h) in handles {
                parts[i] = Some(h.join().expect("worker").expect("evaluate"));
            }
        });
        Ok(parts.into_iter().flat_map(|p| p.expect("part")).collect())
    }
}

/// A constrained bi-objective problem (knapsack) search with the adaptive mutation.
pub fn knapsack_algo(generations: u64) -> (Knapsack, Nsga2) {
    let p = Knapsack::new(30, 7);
    let algo = Nsga2::new(40)
        .with_crossover(LayerwiseCrossover::new(CrossoverKind::TwoPoint, 0.9))
        .with_mutation(GeneMutation::default())
        .with_termination(Termination::generations(generations))
        .with_reference_point(p.reference());
    (p, algo)
}

/// A 4-objective search (exercises the 4-D hypervolume in the history).
pub fn hash_algo(generations: u64) -> (HashProblem, Nsga2) {
    let p = HashProblem::new(50, 6, 4);
    let algo = Nsga2::new(32)
        .with_termination(Termination::generations(generations))
        .with_reference_point(vec![1.0; 4]);
    (p, algo)
}

/// Asserts two results are the same run: equal values and byte-identical JSON (so f64
/// bit patterns, including the sign of zero, match too). Wall time is excluded.
pub fn assert_same_run(a: &SearchResult, b: &SearchResult) {
    assert_eq!(a.history.len(), b.history.len());
    assert_eq!(a.history, b.history);
    assert_eq!(a.population, b.population);
    assert_eq!(a.archive, b.archive);
    assert_eq!(a.evaluations, b.evaluations);
    assert_eq!(a.generations, b.generations);
    assert_eq!(a.seed, b.seed);
    let j = |r: &SearchResult| {
        serde_json::to_string(&(&r.history, &r.population, &r.archive)).expect("json")
    };
    assert_eq!(j(a), j(b));
}
