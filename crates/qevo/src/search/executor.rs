//! Who scores an evolution batch. `QuantProblem::evaluate` turns a batch of genomes into
//! `Job`s (a genome at screening or full fidelity, only those its memo lacks) and hands
//! them to an `Executor`; the default scores them on this machine's threads, the Python
//! package's Ray executor sends them to actors that each hold the same model and
//! reference (built with `QuantProblem::score_job`).
//!
//! Determinism: a job's score is a pure function of the genome, the fidelity and the
//! prepared setup (`QuantProblem::fingerprint`), and an executor returns its scores in
//! job order. So the memo, the screening decisions and the engine see the same numbers in
//! the same order whoever scored them, and a remote run gives the local run's front.

use super::problem::Scored;
use crate::error::{Error, Result};

/// One scoring request: a genome and whether it gets the full set of calibration
/// windows (`full`) or only the screening prefix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Job {
    pub genome: Vec<u16>,
    pub full: bool,
}

/// Scores batches of jobs somewhere. Implementations must return one `Scored` per job,
/// in job order, each equal to what `QuantProblem::score_job` gives for it on a setup
/// with the same fingerprint.
pub trait Executor: Send + Sync {
    /// Called once before the evolution with the driver's `QuantProblem::fingerprint`:
    /// start workers here, and refuse (an error) any whose setup fingerprint differs.
    fn start(&self, fingerprint: &str) -> Result<()>;
    fn score(&self, jobs: &[Job]) -> Result<Vec<Scored>>;
}

/// Checks an executor's answer: one score per job, of the fidelity asked for.
pub(crate) fn check_answer(jobs: &[Job], scored: &[Scored]) -> Result<()> {
    if scored.len() != jobs.len() {
        return Err(Error::Executor(format!(
            "returned {} scores for {} jobs",
            scored.len(),
            jobs.len()
        )));
    }
    if let Some(i) = (0..jobs.len()).find(|&i| jobs[i].full != scored[i].full) {
        return Err(Error::Executor(format!(
            "job {i}: asked for a {} score, got a {} one",
            fidelity(jobs[i].full),
            fidelity(scored[i].full)
        )));
    }
    Ok(())
}

fn fidelity(full: bool) -> &'static str {
    if full {
        "full"
    } else {
        "screening"
    }
}
