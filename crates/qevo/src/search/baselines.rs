//! Baselines scored in the same run on the same tokens: uniform plans, a Lagrangian
//! allocation on the sensitivity table at matched sizes (the idea behind llama.cpp's
//! `--target-bpw`), and random search with the evolution's evaluation budget.

use super::problem::{QuantProblem, Scored};
pub use super::sensitivity::Sensitivity;
use crate::error::Result;
use evo::dominance::dominates;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The additive-model plan for multiplier `lambda`: per unit, argmin kl + lambda·bytes.
fn lagrangian_genome(s: &Sensitivity, lambda: f64) -> Vec<u16> {
    s.kl.iter()
        .zip(&s.bytes)
        .map(|(k, b)| {
            (0..k.len())
                .min_by(|&i, &j| {
                    (k[i] + lambda * b[i] as f64)
                        .total_cmp(&(k[j] + lambda * b[j] as f64))
                        .then(j.cmp(&i))
                })
                .unwrap_or(0) as u16
        })
        .collect()
}

/// Lagrangian plans over a sweep of multipliers, deduplicated, smallest first.
pub fn lagrangian_sweep(s: &Sensitivity) -> Vec<(Vec<u16>, u64, f64)> {
    let mut out: Vec<(Vec<u16>, u64, f64)> = Vec::new();
    let kl_scale =
        s.kl.iter()
            .flatten()
            .copied()
            .fold(0.0f64, f64::max)
            .max(1e-9);
    let byte_scale = s.bytes.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let base = kl_scale / byte_scale;
    for i in 0..=400 {
        let lambda = base * 10f64.powf(-6.0 + 12.0 * i as f64 / 400.0);
        let g = lagrangian_genome(s, lambda);
        let size: u64 = g
            .iter()
            .enumerate()
            .map(|(u, &c)| s.bytes[u][c as usize])
            .sum();
        let pred: f64 = g
            .iter()
            .enumerate()
            .map(|(u, &c)| s.kl[u][c as usize])
            .sum();
        if !out.iter().any(|o| o.0 == g) {
            out.push((g, size, pred));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1).then(a.2.total_cmp(&b.2)));
    out
}

/// The Lagrangian plan at `max_bytes`: the sweep's best predicted plan within it, its
/// headroom then filled (`fill`). The sweep's multipliers only reach the table's convex
/// hull, so its plan below a limit can leave several percent of the bytes unspent (on
/// SmolLM2 at Q4_K_M's size, 6%); the filled plan is the search-free allocation at
/// the limit itself, the one an evolved plan is compared with at equal size.
pub fn lagrangian_at(
    s: &Sensitivity,
    sweep: &[(Vec<u16>, u64, f64)],
    max_bytes: u64,
) -> Option<Vec<u16>> {
    sweep
        .iter()
        .filter(|p| p.1 <= max_bytes)
        .min_by(|a, b| a.2.total_cmp(&b.2).then(b.1.cmp(&a.1)))
        .map(|p| fill(s, p.0.clone(), max_bytes))
}

/// `g` with its headroom under `max_bytes` spent on the table: while a unit's choice
/// with a lower predicted KL fits, the one with the largest predicted drop per added byte
/// is taken (ties to the lower unit, then choice).
fn fill(s: &Sensitivity, mut g: Vec<u16>, max_bytes: u64) -> Vec<u16> {
    let mut used: u64 = g
        .iter()
        .enumerate()
        .map(|(u, &c)| s.bytes[u][c as usize])
        .sum();
    loop {
        let mut best: Option<(f64, usize, usize, u64)> = None;
        for (u, &cur) in g.iter().enumerate() {
            let (b0, k0) = (s.bytes[u][cur as usize], s.kl[u][cur as usize]);
            for (c, (&b, &k)) in s.bytes[u].iter().zip(&s.kl[u]).enumerate() {
                let added = b.saturating_sub(b0);
                // `used` holds `b0`: swapping it for `b` must stay within the limit.
                let fits = used - b0 + b <= max_bytes;
                if k < k0 && fits {
                    let rate = (k0 - k) / added.max(1) as f64;
                    if best.is_none_or(|(r, ..)| rate > r) {
                        best = Some((rate, u, c, b));
                    }
                }
            }
        }
        let Some((_, u, c, b)) = best else { return g };
        used = used - s.bytes[u][g[u] as usize] + b;
        g[u] = c as u16;
    }
}

/// A named baseline plan with its full score.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BaselinePoint {
    pub name: String,
    pub genome: Vec<u16>,
    pub scored: Scored,
}

/// Random search: `budget` uniformly random genomes, evaluated like the evolution's
/// offspring (screened, then fully scored when they could enter random search's own
/// front), so both methods get the same number and kind of evaluations. Returns the
/// fully scored ones.
pub fn random_search(
    problem: &QuantProblem,
    budget: usize,
    seed: u64,
) -> Result<Vec<BaselinePoint>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0000_0000_0001);
    let mut out: Vec<BaselinePoint> = Vec::new();
    let mut front: Vec<Vec<f64>> = Vec::new();
    for i in 0..budget {
        let g: Vec<u16> = problem
            .space
            .choices
            .iter()
            .map(|c| rng.random_range(0..c.len()) as u16)
            .collect();
        let s = problem.evaluate_one(&g, &front)?;
        if !s.full {
            continue;
        }
        if s.violation <= 0.0 {
            let o = s.objectives();
            // Weak dominance: an equal vector adds nothing to the front either.
            let covers = |a: &[f64], b: &[f64]| a == b || dominates(a, b);
            if !front.iter().any(|a| covers(a, &o)) {
                front.retain(|a| !covers(&o, a));
                front.push(o);
            }
        }
        out.push(BaselinePoint {
            name: format!("random #{i}"),
            genome: g,
            scored: s,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagrangian_picks_cheapest_loss_per_byte() {
        let s = Sensitivity {
            kl: vec![vec![0.5, 0.1, 0.0], vec![0.05, 0.01, 0.0]],
            bytes: vec![vec![100, 200, 400], vec![100, 200, 400]],
            windows: 1,
            measured: vec![vec![true; 3]; 2],
        };
        // Nearly free bytes: everything at the top level.
        assert_eq!(lagrangian_genome(&s, 1e-9), vec![2, 2]);
        // Expensive bytes: everything at the bottom.
        assert_eq!(lagrangian_genome(&s, 1.0), vec![0, 0]);
        // In between, the sensitive unit gets the bytes first.
        assert_eq!(lagrangian_genome(&s, 0.001), vec![1, 0]);
        let sweep = lagrangian_sweep(&s);
        assert!(sweep.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(lagrangian_at(&s, &sweep, 300), Some(vec![1, 0]));
    }

    #[test]
    fn lagrangian_at_a_limit_fills_the_headroom_its_sweep_leaves() {
        // Unit 0's middle choice is off the convex hull: no multiplier picks [0, 1].
        let s = Sensitivity {
            kl: vec![vec![1.0, 0.9, 0.0], vec![0.2, 0.0]],
            bytes: vec![vec![100, 150, 200], vec![100, 150]],
            windows: 1,
            measured: vec![vec![true; 3], vec![true; 2]],
        };
        let sweep = lagrangian_sweep(&s);
        assert!(sweep.iter().all(|p| p.0 != vec![0, 1]));
        // The sweep's best within 250 bytes is [0, 0] (200); 50 bytes buy unit 1's drop
        // of 0.2 rather than unit 0's 0.1.
        assert_eq!(lagrangian_at(&s, &sweep, 250), Some(vec![0, 1]));
        assert_eq!(lagrangian_at(&s, &sweep, 199), None);
    }
}
