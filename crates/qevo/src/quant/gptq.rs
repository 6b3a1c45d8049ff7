//! qevo's output-error rounding for the GGML block types ("output" rounding): GPTQ's
//! error feedback carried across GGML blocks, so that a tensor's *output* error on
//! calibration activations is minimised rather than each block's own weight error.
//!
//! Owns the input second moments of every linear layer (`collect_hessians`: Σxxᵀ over the
//! calibration windows, computed once per distinct input, so q/k/v and gate/up share one),
//! their factorisation (`Hessian`), and the rounding itself (`quantize_rows_output`).
//!
//! The algorithm, per row of a `[rows, cols]` weight and block by block along the row:
//! 1. quantize the block's current values with llama.cpp's own block quantizer (qevo's
//!    byte-identical port), weighted by the importance matrix or else by the diagonal of H
//!    (what llama.cpp's imatrix is); the block's bytes are written exactly as a standard
//!    GGUF holds them, so unmodified llama.cpp runs the file;
//! 2. spread the block's rounding error onto the columns not yet quantized, by the optimal
//!    linear compensation under H: with U the upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU),
//!    `err = (w_b − q_b) U_bb⁻¹` and `w_rest −= err U_b,rest` (GPTQ, Frantar et al. 2022,
//!    with a whole block quantized at once since a GGML block's scales tie its values).
//!
//! Rows are independent given U, so they run in parallel chunks and the bytes do not
//! depend on the thread count. The factorisation uses faer (sequential, deterministic).
//! Memory is one `cols × cols` matrix per distinct linear input, held for the whole model:
//! fine at 135M parameters (~0.4 GB), not at 7B.

use super::ggml::{self, GgmlType};
use crate::error::{Error, Result};
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};
use rayon::prelude::*;

/// GPTQ's damping: this fraction of H's mean diagonal is added to its diagonal, so that
/// columns with little calibration signal still factor and barely move other columns.
pub const DEFAULT_DAMP: f64 = 0.01;

/// How GGML block types round while a plan is scored, and so when it is exported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum RoundingMode {
    /// llama.cpp's: each block minimises its own (importance-weighted) weight error.
    #[default]
    Block,
    /// qevo's: error carried across blocks to minimise each tensor's output error.
    Output,
}

impl RoundingMode {
    pub fn parse(s: &str) -> Result<RoundingMode> {
        match s {
            "block" => Ok(RoundingMode::Block),
            "output" => Ok(RoundingMode::Output),
            _ => Err(Error::setting(
                "rounding",
                format!("`{s}` is not a rounding (block, output)"),
            )),
        }
    }
}

/// The factorised second moment of one linear layer's input, H = E[xxᵀ] (+ damping).
#[derive(Debug, Clone)]
pub struct Hessian {
    cols: usize,
    /// Upper Cholesky factor of H⁻¹, row-major `cols × cols` (zero below the diagonal).
    u: Vec<f32>,
    /// E[x²] per column before damping: the block quantizer's weights when no importance
    /// matrix is given (llama.cpp's imatrix values are exactly these).
    diag: Vec<f32>,
}

impl Hessian {
    /// Factorises `xtx` (Σxxᵀ over `n` rows, row-major `cols × cols`). A column never
    /// seen (zero diagonal) gets a unit diagonal so that it neither receives nor gives
    /// error; `damp` is GPTQ's relative damping.
    pub fn from_moments(xtx: &[f32], n: usize, cols: usize, damp: f64) -> Result<Hessian> {
        if cols == 0 || xtx.len() != cols * cols || n == 0 {
            return Err(Error::Invalid(format!(
                "input moments hold {} values over {n} rows, need {cols}×{cols} over at least one",
                xtx.len()
            )));
        }
        let scale = 1.0 / n as f64;
        let mut h = Mat::<f64>::from_fn(cols, cols, |i, j| xtx[i * cols + j] as f64 * scale);
        let diag: Vec<f32> = (0..cols).map(|i| h[(i, i)] as f32).collect();
        if diag.iter().any(|v| !v.is_finite()) {
            return Err(Error::Invalid("input moments are not finite".into()));
        }
        let mean = diag.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        for i in 0..cols {
            if h[(i, i)] <= 0.0 {
                h[(i, i)] = 1.0;
            }
        }
        let u = upper_factor_of_inverse(h, damp * mean.max(f64::MIN_POSITIVE))?;
        Ok(Hessian { cols, u, diag })
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// E[x²] per column (llama.cpp's importance values for this input).
    pub fn diag(&self) -> &[f32] {
        &self.diag
    }
}

/// U with H⁻¹ = UᵀU, U upper triangular, as row-major f32. The damping grows tenfold
/// (up to four times) if H + damp·I is not numerically positive definite.
fn upper_factor_of_inverse(h: Mat<f64>, damp: f64) -> Result<Vec<f32>> {
    let n = h.nrows();
    let mut d = damp;
    for _ in 0..5 {
        let mut hd = h.clone();
        for i in 0..n {
            hd[(i, i)] += d;
        }
        if let Ok(llt) = hd.llt(Side::Lower) {
            let inv = llt.inverse();
            if let Ok(l) = inv.llt(Side::Lower) {
                // H⁻¹ = L Lᵀ, so U = Lᵀ: U[i][j] = L[j][i] for j ≥ i.
                let l = l.L();
                let mut u = vec![0f32; n * n];
                for i in 0..n {
                    for j in i..n {
                        u[i * n + j] = l[(j, i)] as f32;
                    }
                }
                return Ok(u);
            }
        }
        d *= 10.0;
    }
    Err(Error::Invalid(
        "input second moment is not positive definite even with damping".into(),
    ))
}

/// Quantizes `[rows, cols]` row-major `data` as GGML type `t` with output-error rounding
/// under `h`, the block quantizer weighted by `weights` (one per column: the importance
/// matrix, or `h.diag()`). Returns exactly the bytes of a standard GGUF tensor of type `t`.
/// `t` must be a quantizable block type whose blocks divide `cols`.
pub(crate) fn quantize_rows_output(
    t: GgmlType,
    data: &[f32],
    rows: usize,
    cols: usize,
    h: &Hessian,
    weights: &[f32],
) -> Result<Vec<u8>> {
    let bl = t.block_len();
    if h.cols != cols || weights.len() != cols {
        return Err(Error::Invalid(format!(
            "input moments cover {} columns and importance {}, the tensor has {cols}",
            h.cols,
            weights.len()
        )));
    }
    let Some(total) = t.tensor_bytes(rows, cols) else {
        return Err(Error::Invalid(format!(
            "a row of {cols} values is not a whole number of {t} blocks ({bl})"
        )));
    };
    if bl == 1 || rows.checked_mul(cols) != Some(data.len()) {
        // Float types have nothing to round; a shape mismatch is refused below.
        return ggml::quantize_rows(t, data, rows, cols, None);
    }
    let row_bytes = total / rows;
    let chunk = ggml::rows_per_chunk(rows, cols).max(8).min(rows);
    let mut out = vec![0u8; total];
    out.par_chunks_mut(chunk * row_bytes)
        .zip(data.par_chunks(chunk * cols))
        .try_for_each(|(o, d)| {
            let mut w = d.to_vec();
            output_rounding_chunk(t, &mut w, cols, h, weights, o)
        })?;
    Ok(out)
}

/// Runs the block loop over one chunk of rows (`w` is updated in place as error is
/// spread; `out` receives the chunk's bytes).
fn output_rounding_chunk(
    t: GgmlType,
    w: &mut [f32],
    cols: usize,
    h: &Hessian,
    weights: &[f32],
    out: &mut [u8],
) -> Result<()> {
    let (bl, bb) = (t.block_len(), t.block_bytes());
    let n_rows = w.len() / cols;
    let row_bytes = cols / bl * bb;
    let weighted = t.supports_imatrix() && weights.iter().any(|&v| v > 0.0);
    let mut block = vec![0f32; n_rows * bl];
    let mut bytes = vec![0u8; n_rows * bb];
    let mut err = vec![0f32; bl];
    for b in 0..cols / bl {
        let (s, e) = (b * bl, b * bl + bl);
        for r in 0..n_rows {
            block[r * bl..(r + 1) * bl].copy_from_slice(&w[r * cols + s..r * cols + e]);
        }
        let im = weighted.then(|| &weights[s..e]);
        let q = ggml::quantize_rows(t, &block, n_rows, bl, im)?;
        bytes.copy_from_slice(&q);
        let deq = ggml::dequantize(t, &bytes, n_rows * bl)?;
        for r in 0..n_rows {
            out[r * row_bytes + b * bb..r * row_bytes + (b + 1) * bb]
                .copy_from_slice(&bytes[r * bb..(r + 1) * bb]);
            let row = &mut w[r * cols..(r + 1) * cols];
            block_error(h, s, &row[s..e], &deq[r * bl..(r + 1) * bl], &mut err);
            spread_error(h, s, e, &err, &mut row[e..]);
        }
    }
    Ok(())
}

/// `err = (w_b − q_b) U_bb⁻¹` for the block starting at column `s`: forward substitution,
/// since (err U_bb)_j = Σ_{i≤j} err_i U_ij.
fn block_error(h: &Hessian, s: usize, w: &[f32], q: &[f32], err: &mut [f32]) {
    let n = h.cols;
    for j in 0..w.len() {
        let mut acc = w[j] - q[j];
        for (i, e) in err[..j].iter().enumerate() {
            acc -= e * h.u[(s + i) * n + s + j];
        }
        let d = h.u[(s + j) * n + s + j];
        err[j] = if d > 0.0 { acc / d } else { 0.0 };
    }
}

/// `rest −= err U[b, e..]`: the optimal compensation of the later columns.
fn spread_error(h: &Hessian, s: usize, e: usize, err: &[f32], rest: &mut [f32]) {
    let n = h.cols;
    for (k, &ek) in err.iter().enumerate() {
        if ek == 0.0 {
            continue;
        }
        let urow = &h.u[(s + k) * n + e..(s + k + 1) * n];
        for (x, &u) in rest.iter_mut().zip(urow) {
            *x -= ek * u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random stream (no RNG dependency in unit tests).
    fn stream(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Correlated inputs: x = z A with a mixing matrix, so H has strong off-diagonals.
    fn inputs(n: usize, cols: usize) -> Vec<f32> {
        let z = stream(1, n * cols);
        let a = stream(2, cols * cols);
        let mut x = vec![0f32; n * cols];
        for r in 0..n {
            for j in 0..cols {
                let mut acc = 0.0;
                for k in 0..cols {
                    acc += z[r * cols + k] * (a[k * cols + j] + if k == j { 2.0 } else { 0.0 });
                }
                x[r * cols + j] = acc;
            }
        }
        x
    }

    fn moments(x: &[f32], n: usize, cols: usize) -> Vec<f32> {
        let mut m = vec![0f32; cols * cols];
        for r in 0..n {
            for i in 0..cols {
                for j in 0..cols {
                    m[i * cols + j] += x[r * cols + i] * x[r * cols + j];
                }
            }
        }
        m
    }

    /// Σ over calibration rows of ||(W − Q) x||².
    fn output_error(w: &[f32], q: &[f32], x: &[f32], rows: usize, cols: usize) -> f64 {
        let n = x.len() / cols;
        let mut e = 0.0f64;
        for r in 0..rows {
            for t in 0..n {
                let mut acc = 0.0f64;
                for j in 0..cols {
                    acc += ((w[r * cols + j] - q[r * cols + j]) * x[t * cols + j]) as f64;
                }
                e += acc * acc;
            }
        }
        e
    }

    #[test]
    fn upper_factor_inverts_the_moment() {
        let cols = 12;
        let x = inputs(200, cols);
        let h = Hessian::from_moments(&moments(&x, 200, cols), 200, cols, 0.0).unwrap();
        // UᵀU (H + 0) == I: check (UᵀU) H ≈ I.
        let m = moments(&x, 200, cols);
        for i in 0..cols {
            for j in 0..cols {
                let mut v = 0.0f64;
                for k in 0..cols {
                    let mut utu = 0.0f64;
                    for l in 0..=k.min(i) {
                        utu += h.u[l * cols + i] as f64 * h.u[l * cols + k] as f64;
                    }
                    v += utu * m[k * cols + j] as f64 / 200.0;
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-3, "({i},{j}) = {v}");
            }
        }
    }

    #[test]
    fn output_rounding_lowers_output_error_and_keeps_the_format() {
        // Two 256-blocks per row, so even the K-quants have a block to carry error into.
        let (rows, cols, n) = (8, 512, 700);
        let x = inputs(n, cols);
        let h = Hessian::from_moments(&moments(&x, n, cols), n, cols, DEFAULT_DAMP).unwrap();
        let w = stream(3, rows * cols);
        for t in [
            GgmlType::Q4_0,
            GgmlType::Q3K,
            GgmlType::Q4K,
            GgmlType::Iq4Nl,
        ] {
            let plain = ggml::quantize_rows(t, &w, rows, cols, Some(h.diag())).unwrap();
            let out = quantize_rows_output(t, &w, rows, cols, &h, h.diag()).unwrap();
            assert_eq!(out.len(), plain.len(), "{t}");
            let qp = ggml::dequantize(t, &plain, rows * cols).unwrap();
            let qo = ggml::dequantize(t, &out, rows * cols).unwrap();
            let (ep, eo) = (
                output_error(&w, &qp, &x, rows, cols),
                output_error(&w, &qo, &x, rows, cols),
            );
            assert!(
                eo < 0.8 * ep,
                "{t}: output error {eo} vs imatrix rounding {ep}"
            );
        }
    }

    #[test]
    fn output_rounding_is_chunk_independent() {
        let (rows, cols, n) = (40, 64, 300);
        let x = inputs(n, cols);
        let h = Hessian::from_moments(&moments(&x, n, cols), n, cols, DEFAULT_DAMP).unwrap();
        let w = stream(4, rows * cols);
        let all = quantize_rows_output(GgmlType::Q4_0, &w, rows, cols, &h, h.diag()).unwrap();
        let row_bytes = all.len() / rows;
        for r in [0, 17, 39] {
            let one = quantize_rows_output(
                GgmlType::Q4_0,
                &w[r * cols..(r + 1) * cols],
                1,
                cols,
                &h,
                h.diag(),
            )
            .unwrap();
            assert_eq!(one, all[r * row_bytes..(r + 1) * row_bytes], "row {r}");
        }
    }

    #[test]
    fn mismatched_moments_are_refused() {
        let h = Hessian::from_moments(&[1.0, 0.0, 0.0, 1.0], 1, 2, DEFAULT_DAMP).unwrap();
        let err = quantize_rows_output(GgmlType::Q4_0, &[0.0; 32], 1, 32, &h, &[1.0; 32]);
        assert!(err.is_err());
        assert!(Hessian::from_moments(&[1.0; 3], 1, 2, 0.0).is_err());
    }
}
