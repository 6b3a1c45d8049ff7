//! Unit tests of tune: gradients against finite differences, the f16 projection, exact
//! resume, divergence, that training lowers the KL it is asked to lower, and that the
//! step returned is the best on validation, however large the rate.

use super::params::{decode, Params, Slot};
use super::*;
use crate::calib::TokenWindows;
use crate::plan::resolve_ggml;
use crate::plan::TensorPlan;
use crate::quant::WeightFormat;
use candle_core::Device;

fn embedded() -> Model {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets"));
    Model::load(dir).unwrap()
}

fn reference(m: &Model, text: &str, seq: usize, n: usize) -> Reference {
    let w = TokenWindows::from_text(m, text, seq, n).unwrap();
    Reference::build(m, w, m.arch.vocab()).unwrap()
}

fn plan(m: &Model, t: GgmlType) -> ResolvedPlan {
    let p = TensorPlan::uniform(m, WeightFormat::Ggml(t), 16).unwrap();
    resolve_ggml(m, &p, false).unwrap()
}

struct Fixture {
    m: Model,
    calib: Reference,
    held: Reference,
    rounding: RoundingInputs,
}

fn fixture() -> Fixture {
    let m = embedded();
    let calib = reference(&m, crate::assets::CALIB_TEXT, 32, 6);
    let held = reference(&m, crate::assets::HELDOUT_TEXT, 32, 4);
    Fixture {
        m,
        calib,
        held,
        rounding: RoundingInputs::default(),
    }
}

impl Fixture {
    fn setup<'a>(&'a self, plan: &'a ResolvedPlan) -> TuneSetup<'a> {
        TuneSetup {
            model: &self.m,
            plan,
            rounding: &self.rounding,
            calibration: &self.calib,
            heldout: &self.held,
        }
    }
}

fn loss_at(p: &Params, m: &Model, r: &Reference, wins: &[usize]) -> f64 {
    let w = p.weights(false).unwrap();
    let train = m.with_llama_aux(&p.aux().unwrap(), true).unwrap();
    loss::batch_loss(&train, &w, r, wins)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64
}

/// Directional finite difference along each variable's own gradient: for a scale, a
/// min-scale and a norm variable, (L(x + hu) − L(x − hu)) / 2h must match |g|.
#[test]
fn gradients_match_finite_differences() {
    let f = fixture();
    let rp = plan(&f.m, GgmlType::Q4_1);
    let p = Params::new(&f.m, &rp, &f.rounding, true, Codes::Fixed, false).unwrap();
    let train = f.m.with_llama_aux(&p.aux().unwrap(), true).unwrap();
    let wins = [0usize, 1];
    // Move the scales off the stored values first, so the check is not at a stationary
    // point of the rounding.
    for v in &p.vars[..2] {
        v.set(&(v.as_tensor().ones_like().unwrap() * 0.02).unwrap())
            .unwrap();
    }
    let w = p.weights(false).unwrap();
    let grads = loss::batch_loss(&train, &w, &f.calib, &wins)
        .unwrap()
        .backward()
        .unwrap();
    let kinds = [
        p.slots
            .iter()
            .position(|s| matches!(s, Slot::Scale(_)))
            .unwrap(),
        p.slots
            .iter()
            .position(|s| matches!(s, Slot::Min(_)))
            .unwrap(),
        p.slots
            .iter()
            .position(|s| matches!(s, Slot::Aux(_)))
            .unwrap(),
    ];
    for k in kinds {
        check_finite_difference(&p, &f, &grads, &wins, k);
    }
}

/// (L(x + hu) − L(x − hu)) / 2h along variable `k`'s own gradient must match |g|.
fn check_finite_difference(
    p: &Params,
    f: &Fixture,
    grads: &candle_core::backprop::GradStore,
    wins: &[usize],
    k: usize,
) {
    {
        let v = &p.vars[k];
        let g = grads.get(v).unwrap().clone();
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt() as f64;
        assert!(norm > 0.0, "variable {k} has no gradient");
        let u = (&g / norm).unwrap();
        let x0 = v.as_tensor().copy().unwrap();
        let h = 1e-3;
        v.set(&(&x0 + (&u * h).unwrap()).unwrap()).unwrap();
        let up = loss_at(p, &f.m, &f.calib, wins);
        v.set(&(&x0 - (&u * h).unwrap()).unwrap()).unwrap();
        let down = loss_at(p, &f.m, &f.calib, wins);
        v.set(&x0).unwrap();
        let fd = (up - down) / (2.0 * h);
        let rel = (fd - norm).abs() / norm;
        assert!(
            rel < 0.05,
            "{:?}: |g| {norm:.6e}, finite difference {fd:.6e}",
            p.slots[k]
        );
    }
}

/// The sub-scale and sub-min offsets (unrounded, for the check) get the gradient of the
/// loss through `d · μ(s_j)` and `dmin · t_j`: q2_k's scales and mins, iq3_s's odd
/// multipliers `1 + 2s`.
#[test]
fn sub_scale_gradients_match_finite_differences() {
    for (t, kinds) in [
        (GgmlType::Q2K, &[Slot::Sub(0), Slot::SubMin(0)][..]),
        (GgmlType::Iq3S, &[Slot::Sub(0)][..]),
    ] {
        let f = fixture();
        let rp = plan(&f.m, t);
        let p = Params::new(&f.m, &rp, &f.rounding, false, Codes::Fixed, true).unwrap();
        let train = f.m.with_llama_aux(&p.aux().unwrap(), true).unwrap();
        let wins = [0usize, 1];
        let w = p.weights(false).unwrap();
        let grads = loss::batch_loss(&train, &w, &f.calib, &wins)
            .unwrap()
            .backward()
            .unwrap();
        for kind in kinds {
            let same = |s: &Slot| std::mem::discriminant(s) == std::mem::discriminant(kind);
            let k = p.slots.iter().position(same).unwrap();
            check_finite_difference(&p, &f, &grads, &wins, k);
        }
    }
}

/// The forward pass uses the f16 scales the file will hold: after any update, the
/// projected weights equal the finished bytes decoded by the standard dequantizer, for
/// fixed and for re-derived codes.
#[test]
fn projected_weights_are_what_the_finished_bytes_decode_to() {
    for codes in [Codes::Fixed, Codes::Rederive] {
        for t in [
            GgmlType::Q4_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q4K,
        ] {
            check_projection(t, codes);
        }
    }
}

/// With trained sub-scales, every K type's (and iq4_xs's, iq3_s's) forward pass is the finished bytes decoded:
/// the moved sub-scales are rounded, clamped and packed exactly as the forward used them.
#[test]
fn projected_sub_scales_are_what_the_finished_bytes_decode_to() {
    let types: Vec<GgmlType> = GgmlType::ALL
        .into_iter()
        .filter(|&t| crate::quant::sub_scales::sub_scale_layout(t).is_some())
        .collect();
    assert_eq!(types.len(), 7, "{types:?}");
    for t in types {
        check_projection_with(t, Codes::Fixed, true);
    }
}

fn check_projection(t: GgmlType, codes: Codes) {
    check_projection_with(t, codes, false)
}

fn check_projection_with(t: GgmlType, codes: Codes, subs: bool) {
    let f = fixture();
    let rp = plan(&f.m, t);
    let p = Params::new(&f.m, &rp, &f.rounding, false, codes, subs).unwrap();
    for (v, slot) in p.vars.iter().zip(&p.slots) {
        let n = v.elem_count();
        // Sub-scale offsets move by whole and half steps, some past the field's range.
        let step = match slot {
            Slot::Sub(_) | Slot::SubMin(_) => 0.75,
            _ => 1.7e-3,
        };
        let vals: Vec<f32> = (0..n).map(|i| ((i % 13) as f32 - 6.0) * step).collect();
        v.set(&Tensor::from_vec(vals, v.dims(), &Device::Cpu).unwrap())
            .unwrap();
    }
    let trained = p.weights(true).unwrap();
    let finished = p.finish().unwrap();
    if subs {
        let moved = finished.iter().zip(&p.tensors).any(|(b, q)| {
            let n = q.rows * q.cols;
            crate::quant::sub_scales::sub_scales(t, b, n).unwrap()
                != crate::quant::sub_scales::sub_scales(t, &q.bytes, n).unwrap()
        });
        assert!(moved, "{t:?}: no sub-scale moved");
    }
    let decoded = decode(&p, &finished).unwrap();
    for (a, b) in trained.iter().zip(&decoded) {
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let scale = b.abs().unwrap().max_all().unwrap();
        let (d, s) = (
            diff.to_scalar::<f32>().unwrap(),
            scale.to_scalar::<f32>().unwrap(),
        );
        assert!(
            d <= s * 1e-6,
            "{t:?} {codes:?}: trained and decoded weights differ by {d} (max {s})"
        );
    }
}

fn quick(steps: usize) -> TuneConfig {
    TuneConfig {
        steps,
        lr: 5e-3,
        batch: 2,
        seed: 7,
        ..TuneConfig::default()
    }
}

#[test]
fn tuning_lowers_calibration_and_heldout_kl_of_uniform_q4_0() {
    let f = fixture();
    let rp = plan(&f.m, GgmlType::Q4_0);
    let out = tune(&f.setup(&rp), &quick(12), TuneHooks::default()).unwrap();
    let (b, a) = (out.before, out.after);
    assert!(
        a.calibration.kl < 0.95 * b.calibration.kl,
        "calibration KL {} → {}",
        b.calibration.kl,
        a.calibration.kl
    );
    assert!(
        a.heldout.kl < b.heldout.kl,
        "held-out KL {} → {}",
        b.heldout.kl,
        a.heldout.kl
    );
    assert_eq!(out.history.len(), 12);
    // Same size: every tensor keeps its type and byte count.
    for ((info, t), bytes) in f.m.tensors.iter().zip(&rp.types).zip(&out.tuned.bytes) {
        assert_eq!(Some(bytes.len()), t.tensor_bytes(info.rows, info.cols));
    }
}

#[test]
fn rederived_codes_lower_the_kl_and_change_the_codes() {
    let f = fixture();
    let rp = plan(&f.m, GgmlType::Q4_0);
    let cfg = TuneConfig {
        codes: Codes::Rederive,
        ..quick(12)
    };
    let out = tune(&f.setup(&rp), &cfg, TuneHooks::default()).unwrap();
    assert!(out.after.calibration.kl < 0.95 * out.before.calibration.kl);
    let fixed = tune(&f.setup(&rp), &quick(12), TuneHooks::default()).unwrap();
    assert_ne!(out.tuned.bytes, fixed.tuned.bytes);
}

/// Training q3_k's sub-scales moves some of them and lowers the calibration KL; the
/// written sub-scales are what the reported scores decode.
#[test]
fn trained_sub_scales_move_and_lower_the_kl_of_uniform_q3_k() {
    let f = fixture();
    let rp = plan(&f.m, GgmlType::Q3K);
    let cfg = TuneConfig {
        sub_scales: true,
        lr_sub: 0.2,
        ..quick(12)
    };
    let out = tune(&f.setup(&rp), &cfg, TuneHooks::default()).unwrap();
    assert!(!out.kept_initial);
    assert!(
        out.after.calibration.kl < out.before.calibration.kl,
        "calibration KL {} → {}",
        out.before.calibration.kl,
        out.after.calibration.kl
    );
    let p = Params::new(&f.m, &rp, &f.rounding, false, Codes::Fixed, false).unwrap();
    let moved = out.tuned.bytes.iter().zip(&p.tensors).any(|(b, q)| {
        let n = q.rows * q.cols;
        crate::quant::sub_scales::sub_scales(q.ty, b, n).unwrap()
            != crate::quant::sub_scales::sub_scales(q.ty, &q.bytes, n).unwrap()
    });
    assert!(moved, "no q3_k sub-scale moved");
}

#[test]
fn resumed_run_gives_the_bytes_of_an_uninterrupted_one() {
    resume_matches(GgmlType::Q4K, false, quick(0));
}

#[test]
fn resumed_run_with_sub_scales_gives_the_bytes_of_an_uninterrupted_one() {
    resume_matches(GgmlType::Q3K, true, quick(0));
}

/// With a rate so large that steps are undone: the rate controller, Adam's step count
/// and the best step so far all come back from the checkpoint.
#[test]
fn resumed_run_after_undone_steps_gives_the_bytes_of_an_uninterrupted_one() {
    let cfg = TuneConfig {
        lr: 1.0,
        lr_aux: 1.0,
        ..quick(0)
    };
    resume_matches(GgmlType::Q4K, false, cfg);
}

fn resume_matches(t: GgmlType, sub_scales: bool, base: TuneConfig) {
    let f = fixture();
    let rp = plan(&f.m, t);
    let dir = tempfile::tempdir().unwrap();
    let run = |steps: usize, ck: &str, resume: bool| {
        let cfg = TuneConfig {
            steps,
            checkpoint: Some(dir.path().join(ck)),
            checkpoint_every: 3,
            eval_every: 2,
            resume,
            sub_scales,
            lr_sub: 0.3,
            ..base.clone()
        };
        tune(&f.setup(&rp), &cfg, TuneHooks::default()).unwrap()
    };
    let whole = run(6, "a.safetensors", false);
    let first = run(3, "b.safetensors", false);
    assert_eq!(first.resumed_from, None);
    let rest = run(6, "b.safetensors", true);
    assert_eq!(rest.resumed_from, Some(3));
    assert_eq!(rest.kept_step, whole.kept_step);
    assert_eq!(rest.tuned.bytes, whole.tuned.bytes);
    let aux = |o: &TuneOutcome| -> Vec<Vec<f32>> {
        o.tuned
            .aux
            .iter()
            .map(|(_, t)| t.flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    };
    assert_eq!(aux(&rest), aux(&whole));
    let steps = |o: &TuneOutcome| -> Vec<(usize, u64, bool, Option<u64>)> {
        o.history
            .iter()
            .map(|r| {
                let v = r.validation_kl.map(f64::to_bits);
                (r.step, r.loss.to_bits(), r.kept, v)
            })
            .collect()
    };
    assert_eq!(steps(&rest), steps(&whole));
}

#[test]
fn checkpoint_of_another_plan_is_refused() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck.safetensors");
    let cfg = |resume| TuneConfig {
        checkpoint: Some(ck.clone()),
        checkpoint_every: 1,
        resume,
        ..quick(1)
    };
    let q4 = plan(&f.m, GgmlType::Q4_0);
    tune(&f.setup(&q4), &cfg(false), TuneHooks::default()).unwrap();
    let q5 = plan(&f.m, GgmlType::Q5_0);
    let err = tune(&f.setup(&q5), &cfg(true), TuneHooks::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ck.safetensors") && err.contains("another run"),
        "{err}"
    );
}

/// A NaN in the parameters makes the step fail without touching any variable.
#[test]
fn divergence_stops_and_keeps_the_last_good_parameters() {
    let f = fixture();
    let rp = plan(&f.m, GgmlType::Q4_0);
    let p = Params::new(&f.m, &rp, &f.rounding, true, Codes::Fixed, false).unwrap();
    let k = p
        .slots
        .iter()
        .position(|s| matches!(s, Slot::Aux(_)))
        .unwrap();
    let bad = (p.vars[k].as_tensor() * f64::NAN).unwrap();
    p.vars[k].set(&bad).unwrap();
    let before: Vec<Vec<f32>> = p
        .vars
        .iter()
        .map(|v| v.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    let mut tr = Trainer::new(&p, 1.0).unwrap();
    let err = tr.step(&f.setup(&rp), &p, &quick(1), 4).unwrap_err();
    assert!(err.to_string().contains("diverged at step 1"), "{err}");
    let after: Vec<Vec<f32>> = p
        .vars
        .iter()
        .map(|v| v.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    assert_eq!(tr.step, 0);
    for (a, b) in before.iter().zip(&after) {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    let msg = diverged(err, &quick(1), None).to_string();
    assert!(msg.contains("no checkpoint was written"), "{msg}");
}

#[test]
fn bad_settings_are_refused_by_name() {
    let f = fixture();
    let rp = plan(&f.m, GgmlType::Q4_0);
    for (cfg, key) in [
        (
            TuneConfig {
                steps: 0,
                ..quick(1)
            },
            "steps",
        ),
        (
            TuneConfig {
                lr: f32::NAN,
                ..quick(1)
            },
            "lr",
        ),
        (
            TuneConfig {
                checkpoint_every: 2,
                ..quick(1)
            },
            "checkpoint",
        ),
    ] {
        let err = tune(&f.setup(&rp), &cfg, TuneHooks::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(key), "{err}");
    }
}

/// An f32 plan is the FP model: training its norms can only add the optimiser's noise,
/// so the plan's own bytes and norms come back, with its own scores.
#[test]
fn a_plan_already_at_the_fp_model_comes_back_unchanged() {
    let f = fixture();
    let rp = plan(&f.m, GgmlType::F32);
    let out = tune(&f.setup(&rp), &quick(3), TuneHooks::default()).unwrap();
    assert!(out.kept_initial);
    assert_eq!(out.after, out.before);
    let p = Params::new(&f.m, &rp, &f.rounding, false, Codes::Fixed, false).unwrap();
    let initial: Vec<Vec<u8>> = p.tensors.iter().map(|q| q.bytes.clone()).collect();
    assert_eq!(out.tuned.bytes, initial);
    // The norms too: the ones the model was loaded with, not the trained ones.
    let norms = f.m.llama_aux_tensors().unwrap();
    for ((name, got), (_, want)) in out.tuned.aux.iter().zip(&norms) {
        let (g, w): (Vec<f32>, Vec<f32>) = (
            got.flatten_all().unwrap().to_vec1().unwrap(),
            want.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(g, w, "{name}");
    }
}

/// The validation KL of each measured step, with step 0 (the plan) first.
fn measured(out: &TuneOutcome) -> Vec<(usize, f64)> {
    let steps = out
        .history
        .iter()
        .filter_map(|r| r.validation_kl.map(|v| (r.step, v)));
    std::iter::once((0, out.before.validation.kl))
        .chain(steps)
        .collect()
}

/// The step returned is the one with the lowest validation KL measured (step 0, the plan,
/// included), and its bytes score exactly that KL on validation.
#[test]
fn the_kept_step_is_the_best_measured_on_validation() {
    let f = fixture();
    let rp = plan(&f.m, GgmlType::Q3K);
    let cfg = TuneConfig {
        eval_every: 2,
        ..quick(8)
    };
    let out = tune(&f.setup(&rp), &cfg, TuneHooks::default()).unwrap();
    let m = measured(&out);
    assert_eq!(m.len(), 5, "{m:?}");
    let best = m.iter().fold(m[0], |b, &x| if x.1 < b.1 { x } else { b });
    assert_eq!(out.kept_step, best.0);
    assert_eq!(out.after.validation.kl, best.1);
    assert!(out.after.validation.kl <= out.before.validation.kl);
}

/// Rates a thousand times too large (scales, norms and sub-scales): the trust region
/// caps each step, backtracking undoes the steps that raise their batch's loss, and the
/// model returned is never worse than the start on validation.
#[test]
fn tune_never_returns_a_step_worse_than_the_start_on_validation() {
    let f = fixture();
    let rp = plan(&f.m, GgmlType::Q3K);
    let cfg = TuneConfig {
        lr: 5.0,
        lr_aux: 5.0,
        lr_sub: 50.0,
        sub_scales: true,
        eval_every: 1,
        ..quick(10)
    };
    let out = tune(&f.setup(&rp), &cfg, TuneHooks::default()).unwrap();
    assert!(out.after.validation.kl <= out.before.validation.kl);
    assert!(out.history.iter().all(|r| r.loss.is_finite()));
    // Every kept step kept its batch's loss within the tolerance.
    for r in out.history.iter().filter(|r| r.kept) {
        assert!(r.loss_after <= r.loss * (1.0 + control::MAX_RISE), "{r:?}");
    }
}

/// A huge rate does not diverge: the validation KL never runs away from the start's
/// (each measured step within 50% of it), because steps that raise their batch's loss
/// are undone and shrink the rate.
#[test]
fn a_huge_rate_does_not_diverge() {
    let f = fixture();
    let rp = plan(&f.m, GgmlType::Q4_0);
    let cfg = TuneConfig {
        lr: 100.0,
        lr_aux: 100.0,
        eval_every: 1,
        ..quick(10)
    };
    let out = tune(&f.setup(&rp), &cfg, TuneHooks::default()).unwrap();
    let start = out.before.validation.kl;
    for (step, v) in measured(&out) {
        assert!(
            v < 1.5 * start,
            "step {step}: validation KL {v}, start {start}"
        );
    }
    assert!(out.after.validation.kl <= start);
}

#[test]
fn calibration_windows_split_into_training_and_validation() {
    assert_eq!(training_windows(16, 0.25).unwrap(), 12);
    assert_eq!(training_windows(6, 0.25).unwrap(), 4);
    // At least two validation windows, at least one training window.
    assert_eq!(training_windows(3, 0.1).unwrap(), 1);
    let err = training_windows(2, 0.25).unwrap_err().to_string();
    assert!(err.starts_with("validation"), "{err}");
    // Batches draw from the training windows only.
    for step in 0..50 {
        assert!(batch_windows(9, step, 12, 4).iter().all(|&w| w < 12));
    }
}

#[test]
fn batches_depend_only_on_seed_and_step() {
    assert_eq!(batch_windows(3, 5, 10, 4), batch_windows(3, 5, 10, 4));
    assert_ne!(batch_windows(3, 5, 10, 4), batch_windows(3, 6, 10, 4));
    assert_eq!(batch_windows(1, 0, 3, 8), vec![0, 1, 2]);
}
