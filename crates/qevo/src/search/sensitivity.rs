//! The per-unit sensitivity table: the KL when a single unit is quantized to one of its
//! choices and everything else stays FP. It feeds the Lagrangian seeds and baseline, the
//! surrogate, and the report.
//!
//! Measuring every cell is one forward per (unit, choice), from the unit's block on; on
//! a 135M model with tensor units that is over a thousand forwards and dominates a
//! search's preparation. A *scaled* table measures two probe cells per unit and predicts
//! its other weight-only choices from their importance-weighted weight error
//! `E = Σ_j imp_j Σ_i (W_ij − Ŵ_ij)²`, the expected squared output error under the
//! calibration inputs' per-channel second moments. To second order the KL is a
//! quadratic form in the output error, so a unit's KL follows its `E` with a per-unit
//! gain; the two probes fix that gain and the local exponent (`predict`). Choices that
//! quantize activations are always measured: weight error says nothing about them.

use super::space::SearchSpace;
use crate::error::{Error, Result};
use crate::eval::Evaluator;
use crate::model::TensorInfo;
use crate::plan::{fp_choices, tensor_bytes, TensorChoice};
use rayon::prelude::*;

/// How the table is filled (`Settings::sensitivity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum SensitivityMode {
    /// Scaled when a measured table would be large (`resolve`), else measured.
    #[default]
    Auto,
    /// Every cell measured.
    Measured,
    /// Two probes per unit measured, the other weight-only cells scaled.
    Scaled,
}

impl SensitivityMode {
    pub fn parse(s: &str) -> Result<SensitivityMode> {
        match s {
            "auto" => Ok(SensitivityMode::Auto),
            "measured" => Ok(SensitivityMode::Measured),
            "scaled" => Ok(SensitivityMode::Scaled),
            _ => Err(Error::setting(
                "sensitivity",
                format!("unknown table mode `{s}` (auto, measured, scaled)"),
            )),
        }
    }

    /// Whether a table of `cells` cells on a model of `params` weights is scaled. Auto
    /// scales when cells × parameters, which a measured table's time follows, exceeds
    /// `AUTO_SCALE_PARAM_CELLS`.
    pub fn scales(self, cells: usize, params: usize) -> bool {
        match self {
            SensitivityMode::Measured => false,
            SensitivityMode::Scaled => true,
            SensitivityMode::Auto => (cells as f64) * (params as f64) > AUTO_SCALE_PARAM_CELLS,
        }
    }
}

/// Cells × parameters above which `Auto` scales: about 150 cells of a 135M model, a
/// minute of forwards on a 2-core host. The embedded model's tables stay measured.
pub const AUTO_SCALE_PARAM_CELLS: f64 = 2e10;

/// KL when a single unit is quantized to each of its choices, everything else FP.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sensitivity {
    /// `kl[u][c]`: unit u at choice c.
    pub kl: Vec<Vec<f64>>,
    /// Bytes of unit u at choice c.
    pub bytes: Vec<Vec<u64>>,
    pub windows: usize,
    /// `measured[u][c]`: the cell was measured (else scaled from weight error).
    pub measured: Vec<Vec<bool>>,
}

impl Sensitivity {
    /// (measured cells, all cells).
    pub fn measured_count(&self) -> (usize, usize) {
        let all = self.measured.iter().map(Vec::len).sum();
        let m = self.measured.iter().flatten().filter(|&&b| b).count();
        (m, all)
    }
}

/// Whether `mode` scales the table of `space` over `tensors`.
pub fn table_scales(mode: SensitivityMode, tensors: &[TensorInfo], space: &SearchSpace) -> bool {
    let cells = space.choices.iter().map(Vec::len).sum::<usize>();
    let params = tensors.iter().map(|t| t.params()).sum::<usize>();
    mode.scales(cells, params)
}

/// Cells a table measures for one unit with these choices: all of them, or, scaled,
/// the activation choices and at most two probes (`probes`).
pub fn measured_cells(choices: &[TensorChoice], scaled: bool) -> usize {
    let weight = choices.iter().filter(|c| weight_only(c)).count();
    match scaled {
        true => choices.len() - weight + weight.min(2),
        false => choices.len(),
    }
}

/// Builds the table on the first `windows` calibration windows: every cell measured, or,
/// with `scale_with` (per tensor, the input channels' importance; None: unweighted),
/// a scaled table. A scaled table stops measuring at `deadline` (`clock::Deadlines`):
/// every unit's first probe is measured before any unit's second, and a unit left
/// without one is scaled at the table's median gain (`borrowed_probe`).
pub fn sensitivity(
    ev: &Evaluator,
    space: &SearchSpace,
    windows: usize,
    scale_with: Option<&[Option<Vec<f32>>]>,
    deadline: Option<std::time::Instant>,
) -> Result<Sensitivity> {
    let errors: Vec<Vec<Option<f64>>> = match scale_with {
        Some(importance) => unit_errors(ev, space, importance)?,
        None => space.choices.iter().map(|l| vec![None; l.len()]).collect(),
    };
    let to_measure = measuring_order(&errors);
    // Only a scaled table can predict what it did not measure.
    let deadline = deadline.filter(|_| scale_with.is_some());
    let scores = measure(ev, space, windows, &to_measure, deadline)?;
    let mut kl: Vec<Vec<Option<f64>>> = errors.iter().map(|e| vec![None; e.len()]).collect();
    for (&(u, c), k) in to_measure.iter().zip(scores) {
        kl[u][c] = Some(k);
    }
    let borrowed = borrowed_probe(&kl, &errors);
    let measured = kl
        .iter()
        .map(|row| row.iter().map(Option::is_some).collect())
        .collect();
    let kl = kl
        .iter()
        .zip(&errors)
        .map(|(k, e)| fill_row(k, e, borrowed))
        .collect();
    Ok(Sensitivity {
        kl,
        bytes: unit_bytes(ev, space),
        windows,
        measured,
    })
}

/// The cells to measure, `(unit, choice)`: each unit's probes (`probes`), first probes
/// of every unit before second ones, so a table cut short by its deadline has spent its
/// time evenly.
fn measuring_order(errors: &[Vec<Option<f64>>]) -> Vec<(usize, usize)> {
    let mut cells: Vec<(usize, usize, usize)> = errors
        .iter()
        .enumerate()
        .flat_map(|(u, e)| {
            probes(e)
                .into_iter()
                .enumerate()
                .map(move |(rank, c)| (rank, u, c))
        })
        .collect();
    cells.sort_unstable();
    cells.into_iter().map(|(_, u, c)| (u, c)).collect()
}

/// KL of each cell of `cells`, in order, in parallel batches; with a deadline, the
/// batches stop once it passes (the first always runs), so fewer scores come back.
fn measure(
    ev: &Evaluator,
    space: &SearchSpace,
    windows: usize,
    cells: &[(usize, usize)],
    deadline: Option<std::time::Instant>,
) -> Result<Vec<f64>> {
    let one = |&(u, c): &(usize, usize)| {
        let mut choices = fp_choices(ev.model);
        for &t in &space.units[u].tensors {
            choices[t] = space.choices[u][c];
        }
        Ok(ev.score(&choices, windows)?.kl)
    };
    let Some(deadline) = deadline else {
        return cells.par_iter().map(one).collect();
    };
    super::clock::batches_until(cells, deadline, |chunk| chunk.par_iter().map(one).collect())
}

/// For units the deadline left without a measured probe: the table's median ratio of
/// KL to weight error over the measured cells, as a probe `(1, ratio)` (None when every
/// unit has its own, or nothing was measured).
fn borrowed_probe(kl: &[Vec<Option<f64>>], errors: &[Vec<Option<f64>>]) -> Option<(f64, f64)> {
    let mut ratios: Vec<f64> = kl
        .iter()
        .flatten()
        .zip(errors.iter().flatten())
        .filter_map(|(k, e)| match (k, e) {
            (Some(k), Some(e)) if *e > 0.0 && *k > 0.0 => Some(k / e),
            _ => None,
        })
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    Some((1.0, ratios[ratios.len() / 2]))
}

/// Bytes of each unit at each of its choices.
fn unit_bytes(ev: &Evaluator, space: &SearchSpace) -> Vec<Vec<u64>> {
    let tensors = &ev.model.tensors;
    space
        .choices
        .iter()
        .zip(&space.units)
        .map(|(list, unit)| {
            list.iter()
                .map(|c| {
                    unit.tensors
                        .iter()
                        .map(|&t| tensor_bytes(c.format, tensors[t].rows, tensors[t].cols))
                        .sum()
                })
                .collect()
        })
        .collect()
}

/// Per unit and choice, the weight error `E` summed over the unit's tensors; None for a
/// choice that quantizes activations.
fn unit_errors(
    ev: &Evaluator,
    space: &SearchSpace,
    importance: &[Option<Vec<f32>>],
) -> Result<Vec<Vec<Option<f64>>>> {
    space
        .choices
        .iter()
        .zip(&space.units)
        .map(|(list, unit)| unit_row_errors(ev, &unit.tensors, list, importance))
        .collect()
}

/// Elements of a tensor whose weight error is taken over all of its rows; a larger
/// tensor's is estimated from evenly spaced rows (`RowSample`). Quantizing Gemma-3's
/// 262144 × 640 embedding into every type took most of its sensitivity stage. A GGML
/// type quantizes rows independently, so a sampled row's error is its error in the
/// whole tensor, and every choice of a unit is measured on the same rows: a sampling
/// error scales the unit's errors alike, and its fitted gain absorbs it.
pub const ERROR_SAMPLE_ELEMENTS: usize = 1 << 18;

/// Evenly spaced rows of a `[rows, cols]` weight, and the factor that scales their
/// error up to the whole tensor's.
struct RowSample {
    values: Vec<f32>,
    rows: usize,
    scale: f64,
}

impl RowSample {
    fn of(w: Vec<f32>, rows: usize, cols: usize) -> RowSample {
        let keep = (ERROR_SAMPLE_ELEMENTS / cols.max(1)).clamp(1, rows.max(1));
        if keep >= rows {
            return RowSample {
                values: w,
                rows,
                scale: 1.0,
            };
        }
        let picked: Vec<usize> = (0..rows).step_by(rows.div_ceil(keep)).collect();
        let values = picked
            .iter()
            .flat_map(|&r| &w[r * cols..(r + 1) * cols])
            .copied()
            .collect();
        RowSample {
            values,
            rows: picked.len(),
            scale: rows as f64 / picked.len() as f64,
        }
    }
}

/// One unit's row of `E`: tensor by tensor, so one tensor's sample is held at a time,
/// its choices quantized in parallel (a quantizer runs on one thread).
fn unit_row_errors(
    ev: &Evaluator,
    tensors: &[usize],
    choices: &[TensorChoice],
    importance: &[Option<Vec<f32>>],
) -> Result<Vec<Option<f64>>> {
    let model = ev.model;
    let mut row: Vec<Option<f64>> = choices
        .iter()
        .map(|c| weight_only(c).then_some(0.0))
        .collect();
    for &t in tensors {
        let info = &model.tensors[t];
        let sample = RowSample::of(model.weight_values(t)?, info.rows, info.cols);
        let imp = importance
            .get(t)
            .and_then(|o| o.as_deref())
            .filter(|i| i.len() == info.cols);
        let errors: Vec<Option<f64>> = choices
            .par_iter()
            .zip(&row)
            .map(|(c, e)| {
                if e.is_none() {
                    return Ok(None);
                }
                let q =
                    ev.weights
                        .fake_quant_rows(model, t, c.format, &sample.values, sample.rows)?;
                let e = weighted_error(&sample.values, &q, info.cols, imp);
                Ok(Some(sample.scale * e))
            })
            .collect::<Result<_>>()?;
        for (e, add) in row.iter_mut().zip(errors) {
            if let (Some(e), Some(add)) = (e.as_mut(), add) {
                *e += add;
            }
        }
    }
    Ok(row)
}

fn weight_only(c: &TensorChoice) -> bool {
    c.act_bits >= 16
}

/// `Σ_j imp_j Σ_i (w_ij − q_ij)²` over row-major `[rows, cols]` weights, per row in
/// parallel and summed in row order, so the value does not depend on the thread count.
pub fn weighted_error(w: &[f32], q: &[f32], cols: usize, imp: Option<&[f32]>) -> f64 {
    let rows: Vec<f64> = w
        .par_chunks(cols.max(1))
        .zip(q.par_chunks(cols.max(1)))
        .map(|(wr, qr)| {
            wr.iter()
                .zip(qr)
                .enumerate()
                .map(|(j, (&a, &b))| {
                    let d = (a - b) as f64;
                    imp.map_or(1.0, |i| i[j] as f64) * d * d
                })
                .sum::<f64>()
        })
        .collect();
    rows.iter().sum()
}

/// The choices of one unit to measure, given each choice's weight error (None: not
/// scalable, so measured). With at most two scalable choices all are measured; else
/// the largest-error choice (the clearest signal) and the one at the median log error
/// of the rest, so the fitted exponent spans the choices a search weighs.
pub fn probes(errors: &[Option<f64>]) -> Vec<usize> {
    let scalable: Vec<usize> = (0..errors.len()).filter(|&c| errors[c].is_some()).collect();
    let mut out: Vec<usize> = (0..errors.len()).filter(|&c| errors[c].is_none()).collect();
    if scalable.len() <= 2 {
        out.extend(scalable);
        out.sort_unstable();
        return out;
    }
    let e = |c: usize| errors[c].unwrap_or(0.0);
    let top = scalable
        .iter()
        .copied()
        .fold(scalable[0], |a, c| if e(c) > e(a) { c } else { a });
    let mut rest: Vec<usize> = scalable
        .iter()
        .copied()
        .filter(|&c| c != top && e(c) > 0.0)
        .collect();
    out.push(top);
    if !rest.is_empty() {
        rest.sort_by(|&a, &b| e(a).total_cmp(&e(b)).then(a.cmp(&b)));
        out.push(rest[(rest.len() - 1) / 2]);
    }
    out.sort_unstable();
    out
}

/// One unit's row: measured cells as measured, the others from `predict` on the
/// measured scalable cells (on `borrowed`, the table's median gain, when it has none).
fn fill_row(kl: &[Option<f64>], errors: &[Option<f64>], borrowed: Option<(f64, f64)>) -> Vec<f64> {
    let mut probes: Vec<(f64, f64)> = kl
        .iter()
        .zip(errors)
        .filter_map(|(k, e)| Some(((*e)?, (*k)?)))
        .collect();
    if probes.is_empty() {
        probes.extend(borrowed);
    }
    kl.iter()
        .zip(errors)
        .map(|(k, e)| match (k, e) {
            (Some(k), _) => *k,
            (None, Some(e)) => predict(*e, &probes),
            // Unreachable: a cell without an error is always measured.
            (None, None) => 0.0,
        })
        .collect()
}

/// Exponents a scaled row may use: KL between linear and quartic in the weight error
/// covers the measured tables (about 1 for 8 bits down to 4, more at 2–3 bits).
const EXPONENT_RANGE: (f64, f64) = (0.5, 2.0);

/// The KL of a choice with weight error `e`, from probes `(error, KL)`: a power law
/// `KL = KL_p · (e / e_p)^b` anchored at the probe nearest in log error, with `b` from
/// two probes (clamped to `EXPONENT_RANGE`) or 1 from one. No error, no loss.
pub fn predict(e: f64, probes: &[(f64, f64)]) -> f64 {
    let usable: Vec<(f64, f64)> = probes
        .iter()
        .copied()
        .filter(|&(pe, pk)| pe > 0.0 && pk > 0.0)
        .collect();
    if e <= 0.0 || usable.is_empty() {
        return 0.0;
    }
    let b = match usable.as_slice() {
        [(e1, k1), (e2, k2), ..] if e1 != e2 => {
            ((k1 / k2).ln() / (e1 / e2).ln()).clamp(EXPONENT_RANGE.0, EXPONENT_RANGE.1)
        }
        _ => 1.0,
    };
    let anchor = usable
        .iter()
        .copied()
        .min_by(|a, b| (e / a.0).ln().abs().total_cmp(&(e / b.0).ln().abs()))
        .unwrap_or(usable[0]);
    anchor.1 * (e / anchor.0).powf(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_take_the_largest_error_and_the_median_of_the_rest() {
        let e = [Some(8.0), Some(4.0), Some(2.0), Some(1.0), Some(0.5)];
        // Largest: 0; the rest sorted 0.5, 1, 2, 4 → lower median 1.0 (choice 3).
        assert_eq!(probes(&e), vec![0, 3]);
        // Activation choices are always measured; two scalable choices are both measured.
        assert_eq!(probes(&[None, Some(1.0), Some(2.0)]), vec![0, 1, 2]);
        // A choice with no error (the weights sit on its grid) is never a probe.
        assert_eq!(probes(&[Some(0.0), Some(3.0), Some(0.0)]), vec![1]);
    }

    #[test]
    fn predict_follows_the_probes_power_law() {
        // KL = 0.1 · e²: the probes give b = 2 and every prediction is exact.
        let p = [(4.0, 1.6), (1.0, 0.1)];
        for e in [0.25, 0.5, 2.0, 3.0] {
            assert!((predict(e, &p) - 0.1 * e * e).abs() < 1e-12, "e={e}");
        }
        // Probes pass through themselves.
        assert!((predict(4.0, &p) - 1.6).abs() < 1e-12);
        // One probe: linear.
        assert!((predict(2.0, &[(4.0, 1.0)]) - 0.5).abs() < 1e-12);
        // No error, no loss; no usable probe, nothing to scale.
        assert_eq!(predict(0.0, &p), 0.0);
        assert_eq!(predict(1.0, &[(0.0, 1.0)]), 0.0);
    }

    #[test]
    fn predict_clamps_the_exponent() {
        // The probes say b = 10; the row uses 2.
        let p = [(2.0, 1024.0), (1.0, 1.0)];
        assert!((predict(0.5, &p) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn weighted_error_weights_input_channels() {
        let w = [1.0f32, 2.0, 3.0, 4.0];
        let q = [0.0f32, 2.0, 3.0, 2.0];
        assert_eq!(weighted_error(&w, &q, 2, None), 5.0);
        assert_eq!(weighted_error(&w, &q, 2, Some(&[10.0, 1.0])), 14.0);
    }

    #[test]
    fn a_large_tensors_error_is_estimated_on_evenly_spaced_rows() {
        let cols = 1 << 10;
        let rows = 2 * ERROR_SAMPLE_ELEMENTS / cols;
        let w: Vec<f32> = (0..rows * cols).map(|i| (i / cols) as f32).collect();
        let s = RowSample::of(w, rows, cols);
        assert_eq!(s.rows, rows / 2);
        assert_eq!(s.values.len(), ERROR_SAMPLE_ELEMENTS);
        // Rows 0, 2, 4, …: each row's values are its own index.
        assert_eq!(
            (s.values[0], s.values[cols], s.values[2 * cols]),
            (0.0, 2.0, 4.0)
        );
        assert!((s.scale * s.rows as f64 - rows as f64).abs() < 1e-9);
        // A tensor within the sample is kept whole.
        let small = RowSample::of(vec![1.0; 6], 2, 3);
        assert_eq!((small.rows, small.scale, small.values.len()), (2, 1.0, 6));
    }

    #[test]
    fn first_probes_of_every_unit_are_measured_before_second_ones() {
        let e = vec![
            vec![Some(8.0), Some(4.0), Some(1.0)],
            vec![Some(2.0), Some(1.0), Some(0.5)],
        ];
        assert_eq!(measuring_order(&e), vec![(0, 0), (1, 0), (0, 2), (1, 2)]);
    }

    #[test]
    fn a_unit_without_a_measured_probe_borrows_the_tables_median_gain() {
        let kl = vec![
            vec![Some(0.2), None],
            vec![Some(0.9), None],
            vec![None, None],
        ];
        let errors = vec![vec![Some(1.0), Some(0.5)]; 3];
        // Ratios 0.2 and 0.9: the upper median 0.9.
        let b = borrowed_probe(&kl, &errors);
        assert_eq!(b, Some((1.0, 0.9)));
        let row = fill_row(&kl[2], &errors[2], b);
        assert!((row[0] - 0.9).abs() < 1e-12 && (row[1] - 0.45).abs() < 1e-12);
        assert_eq!(borrowed_probe(&[vec![None]], &[vec![Some(1.0)]]), None);
    }

    #[test]
    fn auto_scales_only_large_tables() {
        assert!(!SensitivityMode::Auto.scales(300, 4_000_000));
        assert!(SensitivityMode::Auto.scales(1272, 135_000_000));
        assert!(!SensitivityMode::Measured.scales(1272, 135_000_000));
        assert!(SensitivityMode::Scaled.scales(3, 10));
        assert!(SensitivityMode::parse("sideways").is_err());
    }
}
