//! The surrogate that screens offspring before any forward pass: the KL the additive
//! sensitivity model predicts (the sum of each unit's KL when quantized alone), corrected
//! by a line fitted in log–log space on the plans already fully scored, as AMQ does. Its
//! spread (the residuals' standard deviation) makes an optimistic bound: an offspring
//! whose optimistic KL is dominated by the archive cannot enter the front and is never
//! scored.
//!
//! The fit is a pure function of the set of fully scored plans, taken in genome order,
//! so a resumed run (whose memo the checkpoint restores) fits the same line.

use super::baselines::Sensitivity;

/// Fewest fully scored plans a fit is made from.
pub const MIN_FIT_POINTS: usize = 16;

/// Residual standard deviations between the fitted and the optimistic prediction (about
/// 2.3% of plans would be under-predicted by more if the residuals were normal).
pub const OPTIMISM_SIGMAS: f64 = 2.0;

/// Keeps ln() finite for plans at the FP model (KL 0).
const KL_FLOOR: f64 = 1e-9;

/// The additive model: per unit and choice, the KL of that unit alone.
#[derive(Debug, Clone)]
pub struct Surrogate {
    unit_kl: Vec<Vec<f64>>,
}

/// `ln KL = a + b · ln(additive KL)`, with the residuals' standard deviation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub a: f64,
    pub b: f64,
    pub sigma: f64,
    /// Plans it was fitted on.
    pub n: usize,
}

impl Surrogate {
    pub fn new(s: &Sensitivity) -> Surrogate {
        Surrogate {
            unit_kl: s.kl.clone(),
        }
    }

    /// ln of the additive KL of `genome` (None for a genome outside the table).
    pub fn feature(&self, genome: &[u16]) -> Option<f64> {
        if genome.len() != self.unit_kl.len() {
            return None;
        }
        let mut sum = 0.0;
        for (row, &g) in self.unit_kl.iter().zip(genome) {
            sum += row.get(g as usize)?.max(0.0);
        }
        Some((sum + KL_FLOOR).ln())
    }

    /// Least squares of ln KL on the feature over `scored` (genome, KL) pairs, given in
    /// a fixed order; None with fewer than `MIN_FIT_POINTS` usable plans or no spread.
    pub fn fit<'a>(&self, scored: impl Iterator<Item = (&'a [u16], f64)>) -> Option<Fit> {
        let pts: Vec<(f64, f64)> = scored
            .filter(|(_, kl)| kl.is_finite())
            .filter_map(|(g, kl)| Some((self.feature(g)?, (kl.max(0.0) + KL_FLOOR).ln())))
            .collect();
        fit_line(&pts)
    }
}

/// Ordinary least squares `y = a + b x` with the residuals' standard deviation.
fn fit_line(pts: &[(f64, f64)]) -> Option<Fit> {
    let n = pts.len();
    if n < MIN_FIT_POINTS {
        return None;
    }
    let nf = n as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / nf;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / nf;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    // Features equal up to rounding leave no slope to fit (their spread is rounding).
    if !sxx.is_finite() || sxx <= 1e-12 * nf * (1.0 + mx * mx) {
        return None;
    }
    let b = sxy / sxx;
    let a = my - b * mx;
    let sse: f64 = pts.iter().map(|p| (p.1 - a - b * p.0).powi(2)).sum();
    let sigma = (sse / (nf - 2.0)).sqrt();
    sigma.is_finite().then_some(Fit { a, b, sigma, n })
}

impl Fit {
    /// The predicted KL at feature `x`, shifted by `sigmas` residual deviations.
    pub fn kl(&self, x: f64, sigmas: f64) -> f64 {
        ((self.a + self.b * x + sigmas * self.sigma).exp() - KL_FLOOR).max(0.0)
    }

    /// The bound screening uses: lower than the fitted KL by `OPTIMISM_SIGMAS`.
    pub fn optimistic(&self, x: f64) -> f64 {
        self.kl(x, -OPTIMISM_SIGMAS)
    }
}

/// Spearman's rank correlation of paired values (average ranks for ties); None for
/// fewer than 3 pairs or a constant side.
pub fn spearman(pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.len() < 3 {
        return None;
    }
    let rx = ranks(&pairs.iter().map(|p| p.0).collect::<Vec<_>>());
    let ry = ranks(&pairs.iter().map(|p| p.1).collect::<Vec<_>>());
    pearson(&rx, &ry)
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let syy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Sensitivity {
        Sensitivity {
            kl: vec![vec![0.001, 0.01, 0.1], vec![0.002, 0.02, 0.3]],
            bytes: vec![vec![4, 2, 1], vec![4, 2, 1]],
            windows: 2,
            measured: vec![vec![true; 3]; 2],
        }
    }

    #[test]
    fn fit_recovers_a_known_power_law() {
        let s = Surrogate::new(&table());
        let genomes: Vec<Vec<u16>> = (0..3u16)
            .flat_map(|a| (0..3u16).map(move |b| vec![a, b]))
            .collect();
        // True KL = 3 · additive^1.5, so ln KL = ln 3 + 1.5 · x (the floor, 1e-9, is
        // far below every KL here).
        let truth = |g: &[u16]| 3.0 * s.feature(g).unwrap().exp().powf(1.5);
        let pts: Vec<(&[u16], f64)> = genomes
            .iter()
            .cycle()
            .take(MIN_FIT_POINTS + 2)
            .map(|g| (g.as_slice(), truth(g)))
            .collect();
        let f = s.fit(pts.into_iter()).expect("enough points");
        assert!((f.b - 1.5).abs() < 1e-3, "slope {}", f.b);
        assert!((f.a - 3f64.ln()).abs() < 1e-2, "intercept {}", f.a);
        assert!(f.sigma < 1e-3);
        let x = s.feature(&[2, 1]).unwrap();
        assert!(f.optimistic(x) <= f.kl(x, 0.0));
        assert!((f.kl(x, 0.0) - truth(&[2, 1])).abs() / truth(&[2, 1]) < 1e-2);
    }

    #[test]
    fn too_few_or_flat_points_give_no_fit() {
        let s = Surrogate::new(&table());
        let g = [1u16, 1];
        let few: Vec<(&[u16], f64)> = vec![(&g, 0.1); MIN_FIT_POINTS - 1];
        assert_eq!(s.fit(few.into_iter()), None);
        // Every plan has the same feature: no slope can be fitted.
        let flat: Vec<(&[u16], f64)> = vec![(&g, 0.1); MIN_FIT_POINTS + 4];
        assert_eq!(s.fit(flat.into_iter()), None);
        assert_eq!(s.feature(&[1, 1, 1]), None, "genome of another length");
        assert_eq!(s.feature(&[1, 7]), None, "level outside the table");
    }

    #[test]
    fn spearman_ranks_with_ties() {
        let up: Vec<(f64, f64)> = (0..6).map(|i| (i as f64, (i * i) as f64)).collect();
        assert!((spearman(&up).unwrap() - 1.0).abs() < 1e-12);
        let down: Vec<(f64, f64)> = (0..6).map(|i| (i as f64, -(i as f64))).collect();
        assert!((spearman(&down).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        assert_eq!(spearman(&[(1.0, 2.0), (1.0, 3.0), (1.0, 4.0)]), None);
    }
}
