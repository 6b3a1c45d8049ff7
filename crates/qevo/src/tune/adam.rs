//! Adam over flat f32 parameters, written here (not candle-nn's `AdamW`) because a tune
//! checkpoint must save and restore the moment estimates exactly, and candle-nn keeps
//! them private.

/// First and second moment estimates of one parameter, with its learning rate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Moments {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl Moments {
    pub fn zeros(n: usize) -> Self {
        Moments {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }
}

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPS: f32 = 1e-8;

/// One Adam step (`t` counts from 1) on `p` with gradient `g` and rate `lr`, then clamps
/// to `[lo, hi]`. The normalised step `m̂ / √v̂` is clipped to ±1, so no element moves
/// further than `lr` (plain Adam moves up to about 3·`lr` when a gradient surges past its
/// history: one noisy batch). Element-wise and sequential, so the result never depends
/// on threads.
#[cfg(test)]
pub(crate) fn step(p: &mut [f32], g: &[f32], s: &mut Moments, t: u64, lr: f32, bounds: (f32, f32)) {
    step_scaled(p, g, s, t, lr, bounds, None)
}

/// `step` with element `i` moving by at most `lr · unit[i]` (a rate relative to each
/// element's own size).
pub(crate) fn step_scaled(
    p: &mut [f32],
    g: &[f32],
    s: &mut Moments,
    t: u64,
    lr: f32,
    (lo, hi): (f32, f32),
    unit: Option<&[f32]>,
) {
    let c1 = 1.0 - BETA1.powi(t as i32);
    let c2 = 1.0 - BETA2.powi(t as i32);
    for (i, (((x, &g), m), v)) in p.iter_mut().zip(g).zip(&mut s.m).zip(&mut s.v).enumerate() {
        *m = BETA1 * *m + (1.0 - BETA1) * g;
        *v = BETA2 * *v + (1.0 - BETA2) * g * g;
        let u = unit.map_or(1.0, |u| u[i]);
        let update = lr * u * ((*m / c1) / ((*v / c2).sqrt() + EPS)).clamp(-1.0, 1.0);
        *x = (*x - update).clamp(lo, hi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_moves_a_quadratic_to_its_minimum() {
        let mut p = vec![3.0f32, -2.0];
        let mut s = Moments::zeros(2);
        for t in 1..=2000 {
            let g: Vec<f32> = p.iter().map(|x| 2.0 * (x - 1.0)).collect();
            step(&mut p, &g, &mut s, t, 0.01, (f32::MIN, f32::MAX));
        }
        assert!(p.iter().all(|x| (x - 1.0).abs() < 1e-2), "{p:?}");
    }

    #[test]
    fn adam_first_step_moves_each_parameter_by_the_rate() {
        let mut p = vec![0.0f32, 0.0];
        let mut s = Moments::zeros(2);
        step(&mut p, &[5.0, -0.001], &mut s, 1, 0.1, (f32::MIN, f32::MAX));
        assert!(
            (p[0] + 0.1).abs() < 1e-4 && (p[1] - 0.1).abs() < 1e-4,
            "{p:?}"
        );
    }

    /// A gradient 1000× its history's size moves the parameter by the rate, no more.
    #[test]
    fn a_gradient_surge_moves_no_element_further_than_the_rate() {
        let mut p = vec![0.0f32];
        let mut s = Moments::zeros(1);
        for t in 1..=50 {
            step(&mut p, &[1e-3], &mut s, t, 0.1, (f32::MIN, f32::MAX));
        }
        let before = p[0];
        step(&mut p, &[1.0], &mut s, 51, 0.1, (f32::MIN, f32::MAX));
        assert!((before - p[0]) <= 0.1 + 1e-6, "{before} → {}", p[0]);
    }

    #[test]
    fn adam_clamps_to_the_bounds() {
        let mut p = vec![0.0f32];
        let mut s = Moments::zeros(1);
        step(&mut p, &[1.0], &mut s, 1, 1.0, (-0.5, 0.5));
        assert_eq!(p, vec![-0.5]);
    }
}
