//! Step control: how far one step may move, and what happens when a step makes things
//! worse. Three guards, each against one way a noisy batch can wreck a run:
//!
//! - a trust region per variable kind (`radius`): no element moves further than its
//!   rate in one step, and no rate is larger than the kind's radius (1% of a scale or a
//!   norm, a quarter of a sub-scale's integer step), however large the configured rate;
//! - backtracking (`Control::judge`): a step that raises the loss of its own batch by
//!   more than `MAX_RISE` is undone and the rate halves; every kept step lets it grow
//!   back by `GROW`, up to the configured rate;
//! - a short warm-up (`warmup`): Adam's first steps move every element by its full rate
//!   whatever the gradient's size, so the rate ramps up over the first steps.
//!
//! The state is two numbers, saved in a checkpoint, so a resumed run takes the steps an
//! uninterrupted one takes.

use super::params::Slot;

/// A step may raise its batch's loss by this fraction before it is undone: a step along
/// Adam's momentum can be slightly uphill for one batch and still be a good step.
pub(crate) const MAX_RISE: f64 = 0.02;
/// Rate factor after an undone step.
const SHRINK: f32 = 0.5;
/// Rate factor after a kept step (capped at 1: the configured rate).
const GROW: f32 = 1.25;
/// Below this factor the rate stops shrinking: the step is then a few thousandths of
/// the configured rate, small enough that undoing it again only costs time.
const MIN_RATE: f32 = 1.0 / 1024.0;
/// Steps over which the rate ramps up linearly from 1/WARMUP of its value.
const WARMUP: usize = 5;

/// The largest rate a variable kind may use: a scale correction moves by at most 1% of
/// the scale per step, a sub-scale offset by a quarter of the field's integer step (so
/// it takes two steps from a stored level to the next rounding boundary, and one batch
/// never moves it by a whole level), a norm or bias by 1% of its size (`Params::units`).
pub(crate) fn radius(slot: Slot) -> f32 {
    match slot {
        Slot::Scale(_) | Slot::Min(_) => 0.01,
        Slot::Sub(_) | Slot::SubMin(_) => 0.25,
        Slot::Aux(_) => 0.01,
    }
}

/// The warm-up factor of step `step` (counting from 0).
pub(crate) fn warmup(step: usize) -> f32 {
    ((step + 1) as f32 / WARMUP as f32).min(1.0)
}

/// The backtracking state: the factor the configured rates are multiplied by.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Control {
    pub rate: f32,
}

impl Default for Control {
    fn default() -> Self {
        Control { rate: 1.0 }
    }
}

impl Control {
    /// Whether a step that moved its batch's loss from `before` to `after` is kept; an
    /// undone step halves the rate, a kept one lets it grow back. A non-finite `after`
    /// is undone like any other rise.
    pub fn judge(&mut self, before: f64, after: f64) -> bool {
        let keep = after.is_finite() && after <= before * (1.0 + MAX_RISE);
        self.rate = match keep {
            true => (self.rate * GROW).min(1.0),
            false => (self.rate * SHRINK).max(MIN_RATE),
        };
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rise_halves_the_rate_and_kept_steps_grow_it_back() {
        let mut c = Control::default();
        assert!(!c.judge(1.0, 1.5));
        assert_eq!(c.rate, 0.5);
        assert!(!c.judge(1.0, f64::NAN));
        assert_eq!(c.rate, 0.25);
        assert!(c.judge(1.0, 1.01));
        assert!(c.judge(1.0, 0.9));
        assert!((c.rate - 0.25 * GROW * GROW).abs() < 1e-6);
        for _ in 0..10 {
            c.judge(1.0, 0.9);
        }
        assert_eq!(c.rate, 1.0);
    }

    #[test]
    fn the_rate_never_shrinks_to_zero() {
        let mut c = Control::default();
        for _ in 0..100 {
            c.judge(1.0, 2.0);
        }
        assert_eq!(c.rate, MIN_RATE);
    }

    #[test]
    fn warmup_ramps_to_the_full_rate() {
        assert_eq!(warmup(0), 1.0 / WARMUP as f32);
        assert_eq!(warmup(WARMUP - 1), 1.0);
        assert_eq!(warmup(1000), 1.0);
    }
}
