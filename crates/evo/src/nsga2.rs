//! NSGA-II: the generational loop that ties problem, operators, archive, termination
//! and checkpoints together.

use crate::checkpoint::{Checkpoint, CHECKPOINT_FORMAT};
use crate::dominance::rank_and_crowding;
use crate::indicators::hypervolume;
use crate::operators::{
    BinaryTournament, Crossover, GeneMutation, LayerwiseCrossover, Mutation, MutationFeedback,
    NoRepair, RandomSampling, RankAndCrowding, Ranked, Repair, Rng, Sampling, Selection, Survival,
};
use crate::termination::{StopReason, Termination};
use crate::{Archive, EvalContext, EvoError, Genome, Individual, Problem, ProblemStats};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One generation's summary. Generation 0 is the initial population.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub generation: u64,
    /// Genomes evaluated so far (all generations).
    pub evaluations: u64,
    /// Genomes evaluated in this generation.
    pub batch: usize,
    /// Per-objective minimum over the archive (None while nothing feasible was found).
    pub best: Option<Vec<f64>>,
    /// Archive size.
    pub front_size: usize,
    /// Members of the population's first front.
    pub population_front: usize,
    /// Feasible members of the population.
    pub feasible: usize,
    /// Archive hypervolume against the configured reference point.
    pub hypervolume: Option<f64>,
    /// Mutation rate that produced this generation's offspring.
    pub mutation_rate: f64,
    /// Offspring that survived into the population / entered the archive (generation 0:
    /// the initial population, all of which "survive").
    pub survived: usize,
    pub archived: usize,
    /// The problem's own counters after this generation, as it reports them.
    pub problem: ProblemStats,
}

/// The outcome of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchResult {
    pub population: Vec<Individual>,
    /// Every non-dominated feasible solution evaluated during the run.
    pub archive: Vec<Individual>,
    pub history: Vec<GenerationRecord>,
    pub evaluations: u64,
    pub generations: u64,
    pub seed: u64,
    pub stop: StopReason,
    /// Wall time of all sessions of this run (resumes included).
    pub elapsed: Duration,
}

impl SearchResult {
    /// Objective vectors of the archive.
    pub fn front(&self) -> Vec<Vec<f64>> {
        self.archive.iter().map(|m| m.objectives.clone()).collect()
    }
}

/// Called after every generation (after its checkpoint is written); `Break` ends the
/// run cleanly with [`StopReason::Observer`].
pub type Observer<'a> = Box<dyn FnMut(&GenerationRecord) -> ControlFlow<()> + 'a>;

/// Per-run options: checkpointing, resuming, observing.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Where to write the checkpoint after every generation (atomically).
    pub checkpoint: Option<PathBuf>,
    /// Continue from this checkpoint instead of sampling an initial population. The
    /// termination criteria are checked against the restored history, so a finished run
    /// can also be extended by resuming it with a larger budget.
    pub resume: Option<PathBuf>,
    pub observer: Option<Observer<'a>>,
}

/// The NSGA-II algorithm: population size, operators, seed genomes, termination.
/// Build with [`Nsga2::new`] and the `with_*` methods.
pub struct Nsga2 {
    pub pop_size: usize,
    /// Offspring per generation (defaults to the population size).
    pub offspring_size: usize,
    pub sampling: Box<dyn Sampling>,
    pub selection: Box<dyn Selection>,
    pub crossover: Box<dyn Crossover>,
    pub mutation: Box<dyn Mutation>,
    pub repair: Box<dyn Repair>,
    pub survival: Box<dyn Survival>,
    /// Caller-supplied genomes placed first in the initial population (duplicates
    /// dropped, at most `pop_size` used).
    pub seeds: Vec<Genome>,
    pub termination: Termination,
    /// Reference point for the hypervolume in the history (and the stall criterion).
    pub reference_point: Option<Vec<f64>>,
    /// Draws allowed per wanted genome before a batch is accepted short (guards spaces
    /// with fewer distinct genomes than the population needs).
    pub max_redraws: usize,
}

impl Nsga2 {
    /// Defaults: random sampling, binary tournament, uniform layer-wise crossover
    /// (p = 0.9), [`GeneMutation`] with the success-based rate, rank-and-crowding
    /// survival, no repair, 100 generations.
    pub fn new(pop_size: usize) -> Self {
        Nsga2 {
            pop_size,
            offspring_size: pop_size,
            sampling: Box::new(RandomSampling),
            selection: Box::new(BinaryTournament),
            crossover: Box::new(LayerwiseCrossover::default()),
            mutation: Box::new(GeneMutation::default()),
            repair: Box::new(NoRepair),
            survival: Box::new(RankAndCrowding),
            seeds: Vec::new(),
            termination: Termination::generations(100),
            reference_point: None,
            max_redraws: 100,
        }
    }
    pub fn with_offspring_size(mut self, n: usize) -> Self {
        self.offspring_size = n;
        self
    }
    pub fn with_sampling(mut self, s: impl Sampling + 'static) -> Self {
        self.sampling = Box::new(s);
        self
    }
    pub fn with_selection(mut self, s: impl Selection + 'static) -> Self {
        self.selection = Box::new(s);
        self
    }
    pub fn with_crossover(mut self, c: impl Crossover + 'static) -> Self {
        self.crossover = Box::new(c);
        self
    }
    pub fn with_mutation(mut self, m: impl Mutation + 'static) -> Self {
        self.mutation = Box::new(m);
        self
    }
    pub fn with_repair(mut self, r: impl Repair + 'static) -> Self {
        self.repair = Box::new(r);
        self
    }
    pub fn with_survival(mut self, s: impl Survival + 'static) -> Self {
        self.survival = Box::new(s);
        self
    }
    pub fn with_seeds(mut self, seeds: Vec<Genome>) -> Self {
        self.seeds = seeds;
        self
    }
    pub fn with_termination(mut self, t: Termination) -> Self {
        self.termination = t;
        self
    }
    pub fn with_reference_point(mut self, r: Vec<f64>) -> Self {
        self.reference_point = Some(r);
        self
    }

    fn validate<P: Problem + ?Sized>(&self, problem: &P) -> Result<(), EvoError> {
        let m = problem.n_objectives();
        if self.pop_size == 0 {
            return Err(EvoError::Config("population size is 0".into()));
        }
        if self.offspring_size == 0 {
            return Err(EvoError::Config("offspring size is 0".into()));
        }
        if m == 0 {
            return Err(EvoError::Config("problem has no objectives".into()));
        }
        if let Some(r) = &self.reference_point {
            if r.len() != m {
                return Err(EvoError::Config(format!(
                    "reference point has {} values, problem has {m} objectives",
                    r.len()
                )));
            }
            if r.iter().any(|x| !x.is_finite()) {
                return Err(EvoError::Config("reference point is not finite".into()));
            }
        }
        if self.termination.stall.is_some() && self.reference_point.is_none() {
            return Err(EvoError::Config(
                "the stall criterion needs a reference point".into(),
            ));
        }
        for (i, s) in self.seeds.iter().enumerate() {
            problem
                .space()
                .check(s)
                .map_err(|e| EvoError::Genome(format!("seed genome {i}: {e}")))?;
        }
        Ok(())
    }

    /// Runs the search from `seed` (or continues the checkpoint in `options.resume`,
    /// whose seed must equal `seed`). The same seed gives the bitwise-same history,
    /// population and archive, whatever the problem's thread count, and a resumed run
    /// gives exactly what the uninterrupted one does.
    pub fn run<P: Problem + ?Sized>(
        &self,
        problem: &P,
        seed: u64,
        mut options: RunOptions,
    ) -> Result<SearchResult, EvoError> {
        self.validate(problem)?;
        let started = Instant::now();
        let mut observer = options.observer.take();
        let mut st = match &options.resume {
            Some(path) => self.resume(problem, seed, path)?,
            None => {
                let mut ck = self.initial(problem, seed)?;
                self.persist(problem, &options, &mut ck)?;
                if let Some(obs) = observer.as_mut() {
                    if obs(ck.history.last().expect("initial record")).is_break() {
                        return Ok(finish(ck, StopReason::Observer));
                    }
                }
                ck
            }
        };
        let base_elapsed = Duration::from_secs_f64(st.elapsed_s.max(0.0));
        loop {
            let elapsed = base_elapsed + started.elapsed();
            if let Some(reason) = self.termination.check(&st.history, elapsed) {
                st.elapsed_s = elapsed.as_secs_f64();
                return Ok(finish(st, reason));
            }
            self.step(problem, &mut st)?;
            st.elapsed_s = (base_elapsed + started.elapsed()).as_secs_f64();
            self.persist(problem, &options, &mut st)?;
            if let Some(obs) = observer.as_mut() {
                if obs(st.history.last().expect("record")).is_break() {
                    return Ok(finish(st, StopReason::Observer));
                }
            }
        }
    }

    /// Loads the checkpoint at `path` and checks it continues this search: same seed,
    /// gene space, objectives and population size, a history backing its generation
    /// count, genomes inside the space; then restores the problem's own state.
    fn resume<P: Problem + ?Sized>(
        &self,
        problem: &P,
        seed: u64,
        path: &std::path::Path,
    ) -> Result<Checkpoint, EvoError> {
        let space = problem.space();
        let ck = Checkpoint::load(path)?;
        let mismatch = |what: String| EvoError::CheckpointMismatch {
            path: path.to_path_buf(),
            what,
        };
        if ck.seed != seed {
            return Err(mismatch(format!("seed {} != {seed}", ck.seed)));
        }
        if ck.levels != space.levels() {
            return Err(mismatch("gene space differs".into()));
        }
        if ck.n_objectives != problem.n_objectives() {
            return Err(mismatch(format!(
                "{} objectives != {}",
                ck.n_objectives,
                problem.n_objectives()
            )));
        }
        if ck.pop_size != self.pop_size {
            return Err(mismatch(format!(
                "population size {} != {}",
                ck.pop_size, self.pop_size
            )));
        }
        if ck.history.is_empty() || ck.population.is_empty() {
            return Err(mismatch("no population or history".into()));
        }
        // One history record per generation, 0 included: a generation count the
        // history does not back (10^9 typed in) is a damaged file, not a resume.
        if ck.history.len() as u64 != ck.generation.saturating_add(1) {
            return Err(mismatch(format!(
                "generation {} but {} generation records",
                ck.generation,
                ck.history.len()
            )));
        }
        for ind in ck.population.iter().chain(ck.archive.members()) {
            space
                .check(&ind.genome)
                .map_err(|e| mismatch(e.to_string()))?;
        }
        if let Some(state) = &ck.problem_state {
            problem
                .restore_state(state)
                .map_err(|e| mismatch(format!("problem state: {e}")))?;
        }
        Ok(ck)
    }

    fn persist<P: Problem + ?Sized>(
        &self,
        problem: &P,
        options: &RunOptions,
        ck: &mut Checkpoint,
    ) -> Result<(), EvoError> {
        match &options.checkpoint {
            Some(p) => {
                ck.problem_state = problem.save_state();
                ck.save(p)
            }
            None => Ok(()),
        }
    }

    /// Seeds plus sampled genomes, evaluated: generation 0.
    fn initial<P: Problem + ?Sized>(&self, problem: &P, seed: u64) -> Result<Checkpoint, EvoError> {
        let space = problem.space();
        let mut rng = Rng::seed_from_u64(seed);
        let mut seen: HashSet<Genome> = HashSet::new();
        let mut genomes = Vec::with_capacity(self.pop_size);
        for s in &self.seeds {
            if genomes.len() < self.pop_size && seen.insert(s.clone()) {
                genomes.push(s.clone());
            }
        }
        let mut draws = 0usize;
        let max_draws = self.max_redraws.max(1) * self.pop_size;
        while genomes.len() < self.pop_size && draws < max_draws {
            draws += 1;
            let mut g = self.sampling.sample(space, &mut rng);
            self.repair.repair(&mut g, space, &mut rng);
            space.check(&g)?;
            if seen.insert(g.clone()) {
                genomes.push(g);
            }
        }
        let mut archive = Archive::new();
        let population = evaluate(problem, &genomes, 0, &archive)?;
        let archived = population.iter().filter(|i| archive.insert(i)).count();
        let mutation_rate = self.mutation.initial_rate(space);
        let mut ck = Checkpoint {
            format: CHECKPOINT_FORMAT,
            seed,
            n_objectives: problem.n_objectives(),
            levels: space.levels().to_vec(),
            pop_size: self.pop_size,
            generation: 0,
            evaluations: genomes.len() as u64,
            mutation_rate,
            elapsed_s: 0.0,
            rng,
            population,
            archive,
            history: Vec::new(),
            problem_state: None,
        };
        let rec = self.record(
            problem,
            &ck,
            genomes.len(),
            mutation_rate,
            genomes.len(),
            archived,
            None,
        );
        ck.history.push(rec);
        Ok(ck)
    }

    /// One generation: offspring, evaluation, archive, survival, rate adaptation.
    // One piece: one generation of NSGA-II in the textbook's order (select, vary, evaluate,
    // survive, archive, record); the steps share the state they update.
    fn step<P: Problem + ?Sized>(&self, problem: &P, st: &mut Checkpoint) -> Result<(), EvoError> {
        let space = problem.space();
        let generation = st.generation + 1;
        let (rank, crowding) = rank_and_crowding(&st.population);
        let ranked = Ranked {
            pop: &st.population,
            rank: &rank,
            crowding: &crowding,
        };
        let rate = st.mutation_rate;
        let rng = &mut st.rng;
        let mut seen: HashSet<&Genome> = st.population.iter().map(|i| &i.genome).collect();
        let mut children: Vec<Genome> = Vec::with_capacity(self.offspring_size);
        let mut fresh: HashSet<Genome> = HashSet::new();
        let max_draws = self.max_redraws.max(1) * self.offspring_size;
        let mut draws = 0usize;
        while children.len() < self.offspring_size && draws < max_draws {
            let a = self.selection.select(&ranked, rng);
            let b = self.selection.select(&ranked, rng);
            let (c, d) =
                self.crossover
                    .crossover(&st.population[a].genome, &st.population[b].genome, rng);
            for mut child in [c, d] {
                draws += 1;
                self.mutation.mutate(&mut child, space, rate, rng);
                self.repair.repair(&mut child, space, rng);
                space.check(&child)?;
                if children.len() < self.offspring_size
                    && !seen.contains(&child)
                    && fresh.insert(child.clone())
                {
                    children.push(child);
                }
            }
        }
        seen.clear();
        let offspring = evaluate(problem, &children, generation, &st.archive)?;
        let archived = offspring.iter().filter(|i| st.archive.insert(i)).count();
        let parents = st.population.len();
        let mut merged = std::mem::take(&mut st.population);
        merged.extend(offspring);
        let keep = self
            .survival
            .survive(&merged, self.pop_size.min(merged.len()), &mut st.rng);
        let survived = keep.iter().filter(|&&i| i >= parents).count();
        st.population = take_survivors(merged, &keep)?;
        let feedback = MutationFeedback {
            generation,
            offspring: children.len(),
            survived,
            archived,
        };
        st.mutation_rate = self.mutation.next_rate(rate, &feedback, space);
        if !st.mutation_rate.is_finite() {
            return Err(EvoError::Config(format!(
                "mutation produced a non-finite rate in generation {generation}"
            )));
        }
        st.generation = generation;
        st.evaluations += children.len() as u64;
        let prev_hv = st.history.last().and_then(|r| r.hypervolume);
        let reuse_hv = if archived == 0 { prev_hv } else { None };
        let rec = self.record(
            problem,
            st,
            children.len(),
            rate,
            survived,
            archived,
            reuse_hv,
        );
        st.history.push(rec);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record<P: Problem + ?Sized>(
        &self,
        problem: &P,
        st: &Checkpoint,
        batch: usize,
        rate: f64,
        survived: usize,
        archived: usize,
        reuse_hv: Option<f64>,
    ) -> GenerationRecord {
        let population_front = crate::dominance::non_dominated_sort(&st.population)
            .first()
            .map_or(0, |f| f.len());
        let hypervolume = self
            .reference_point
            .as_ref()
            .map(|r| reuse_hv.unwrap_or_else(|| hypervolume(&st.archive.objectives(), r)));
        GenerationRecord {
            generation: st.generation,
            evaluations: st.evaluations,
            batch,
            best: st.archive.best_per_objective(),
            front_size: st.archive.len(),
            population_front,
            feasible: st.population.iter().filter(|i| i.is_feasible()).count(),
            hypervolume,
            mutation_rate: rate,
            survived,
            archived,
            problem: problem.stats(),
        }
    }
}

/// The members of `merged` at the indices survival kept, in that order; an index out of
/// range or given twice is a broken survival operator, reported rather than panicking.
fn take_survivors(merged: Vec<Individual>, keep: &[usize]) -> Result<Vec<Individual>, EvoError> {
    let n = merged.len();
    let mut slots: Vec<Option<Individual>> = merged.into_iter().map(Some).collect();
    keep.iter()
        .map(|&i| {
            slots.get_mut(i).and_then(Option::take).ok_or_else(|| {
                EvoError::Config(format!(
                    "survival returned index {i} twice or out of range ({n} candidates)"
                ))
            })
        })
        .collect()
}

fn finish(ck: Checkpoint, stop: StopReason) -> SearchResult {
    SearchResult {
        population: ck.population,
        archive: ck.archive.into(),
        history: ck.history,
        evaluations: ck.evaluations,
        generations: ck.generation,
        seed: ck.seed,
        stop,
        elapsed: Duration::from_secs_f64(ck.elapsed_s.max(0.0)),
    }
}

/// Evaluates a batch and checks what came back.
fn evaluate<P: Problem + ?Sized>(
    problem: &P,
    genomes: &[Genome],
    generation: u64,
    archive: &Archive,
) -> Result<Vec<Individual>, EvoError> {
    if genomes.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = EvalContext {
        generation,
        archive: archive.members(),
    };
    let evals = problem
        .evaluate(genomes, &ctx)
        .map_err(|source| EvoError::Problem { generation, source })?;
    let bad = |what: String| EvoError::BadEvaluation { generation, what };
    if evals.len() != genomes.len() {
        return Err(bad(format!(
            "{} evaluations for a batch of {}",
            evals.len(),
            genomes.len()
        )));
    }
    let m = problem.n_objectives();
    genomes
        .iter()
        .zip(evals)
        .enumerate()
        .map(|(i, (g, e))| {
            if e.objectives.len() != m {
                return Err(bad(format!(
                    "batch item {i} has {} objectives, expected {m}",
                    e.objectives.len()
                )));
            }
            if let Some(k) = e.objectives.iter().position(|x| !x.is_finite()) {
                return Err(bad(format!("batch item {i}: objective {k} is not finite")));
            }
            if !e.violation.is_finite() || e.violation < 0.0 {
                return Err(bad(format!(
                    "batch item {i}: violation {} is not a finite value >= 0",
                    e.violation
                )));
            }
            Ok(Individual {
                genome: g.clone(),
                objectives: e.objectives,
                violation: e.violation,
                estimated: e.estimated,
            })
        })
        .collect()
}
