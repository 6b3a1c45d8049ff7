//! The size a `qevo gguf` file must fit: a llama.cpp type name (the bytes llama-quantize's
//! mix of that name gives this model's tensors), a whole file's bytes, or bits per
//! weight of the planned tensors; turned into the one number the search limits, the
//! planned tensors' bytes, and checked against what any plan can reach.

use crate::error::{Error, Result};
use crate::model::Model;
use crate::plan::{mix_plan, tensor_bytes, LlamaFtype, TensorPlan};
use crate::quant::{GgmlType, WeightFormat};

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum SizeTarget {
    /// The size of llama-quantize's mix of this name.
    Llama(LlamaFtype),
    /// A whole file's bytes.
    FileBytes(u64),
    /// Bits per weight of the planned tensors.
    Bpw(f64),
}

impl SizeTarget {
    /// `Q4_K_M` (any llama-quantize name), `105MB` / `1.5G` / `2GiB` / `104857600`, or
    /// `4.5bpw`.
    pub fn parse(s: &str) -> Result<SizeTarget> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        if let Some(num) = lower.strip_suffix("bpw") {
            return match num.trim().parse::<f64>() {
                Ok(b) if b.is_finite() && b > 0.0 && b <= 32.0 => Ok(SizeTarget::Bpw(b)),
                _ => Err(Error::setting(
                    "size",
                    format!("`{s}`: bits per weight must be a number in (0, 32]"),
                )),
            };
        }
        if t.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
            return Ok(SizeTarget::FileBytes(crate::mem::parse_size("size", t)?));
        }
        LlamaFtype::parse(t)
            .map(SizeTarget::Llama)
            .map_err(|e| Error::setting("size", e.to_string()))
    }
}

impl std::fmt::Display for SizeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SizeTarget::Llama(t) => write!(f, "{t}"),
            SizeTarget::FileBytes(b) => write!(f, "{b} bytes"),
            SizeTarget::Bpw(b) => write!(f, "{b} bpw"),
        }
    }
}

/// The size limit a search works to, and how it was reached.
#[derive(Debug, Clone)]
pub struct Budget {
    pub target: SizeTarget,
    /// Most bytes the planned tensors may take.
    pub planned_bytes: u64,
    /// Bytes of the file besides the planned tensors, at most (`gguf_fixed_bytes`).
    pub fixed_bytes: u64,
    /// The llama.cpp mix the size came from (with an importance matrix), when it did.
    pub mix: Option<TensorPlan>,
    /// The smallest plan the menu can make, and every tensor at f16.
    pub smallest_bytes: u64,
    pub f16_bytes: u64,
}

impl Budget {
    /// `target` for `model`, whose plans choose among `menu`; a size no plan of the menu
    /// reaches, or one above every tensor at f16, is refused naming both numbers.
    pub fn resolve(model: &Model, target: &SizeTarget, menu: &[WeightFormat]) -> Result<Budget> {
        let fixed_bytes = crate::export::gguf_fixed_bytes(model)?;
        let params: u64 = model.tensors.iter().map(|t| t.params() as u64).sum();
        let mut mix = None;
        let planned_bytes = match target {
            SizeTarget::Llama(f) => {
                let plan = mix_plan(model, *f, true);
                let bytes = plan.size_bytes(model);
                mix = Some(plan);
                bytes
            }
            SizeTarget::FileBytes(b) => b.saturating_sub(fixed_bytes),
            SizeTarget::Bpw(b) => (b * params as f64 / 8.0) as u64,
        };
        let smallest_bytes = smallest(model, menu);
        let f16_bytes = all_in(model, WeightFormat::Ggml(GgmlType::F16));
        let b = Budget {
            target: target.clone(),
            planned_bytes,
            fixed_bytes,
            mix,
            smallest_bytes,
            f16_bytes,
        };
        b.check()?;
        Ok(b)
    }

    fn check(&self) -> Result<()> {
        let (file, lo, hi) = (
            self.planned_bytes + self.fixed_bytes,
            self.smallest_bytes + self.fixed_bytes,
            self.f16_bytes + self.fixed_bytes,
        );
        if self.planned_bytes < self.smallest_bytes {
            return Err(Error::setting(
                "size",
                format!(
                    "{}: a {file}-byte file is below the smallest plan the menu makes, \
                     {lo} bytes (every tensor in its smallest type)",
                    self.target
                ),
            ));
        }
        if self.planned_bytes > self.f16_bytes {
            return Err(Error::setting(
                "size",
                format!(
                    "{}: a {file}-byte file is above the model with every tensor at f16, \
                     {hi} bytes: nothing to search",
                    self.target
                ),
            ));
        }
        Ok(())
    }

    /// The limit in the search's unit (MB of 10^6 bytes), rounded so that it converts
    /// back to exactly `planned_bytes`.
    pub fn max_size_mb(&self) -> f64 {
        (self.planned_bytes as f64 + 0.5) / 1e6
    }

    /// Bits per weight of the planned tensors at the limit.
    pub fn bpw(&self, model: &Model) -> f64 {
        let params: u64 = model.tensors.iter().map(|t| t.params() as u64).sum();
        self.planned_bytes as f64 * 8.0 / params.max(1) as f64
    }
}

/// Every tensor in the smallest format of `menu` it can be written in.
fn smallest(model: &Model, menu: &[WeightFormat]) -> u64 {
    model
        .tensors
        .iter()
        .map(|t| {
            menu.iter()
                .map(|&f| tensor_bytes(f, t.rows, t.cols))
                .min()
                .unwrap_or_else(|| tensor_bytes(WeightFormat::Ggml(GgmlType::F16), t.rows, t.cols))
        })
        .sum()
}

fn all_in(model: &Model, f: WeightFormat) -> u64 {
    model
        .tensors
        .iter()
        .map(|t| tensor_bytes(f, t.rows, t.cols))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_type_names_bytes_or_bits_per_weight() {
        assert_eq!(
            SizeTarget::parse("q4_k_m").unwrap(),
            SizeTarget::Llama(LlamaFtype::Q4_K_M)
        );
        assert_eq!(
            SizeTarget::parse("105MB").unwrap(),
            SizeTarget::FileBytes(105_000_000)
        );
        assert_eq!(SizeTarget::parse("4.5bpw").unwrap(), SizeTarget::Bpw(4.5));
        let e = SizeTarget::parse("Q4_K_Z").unwrap_err().to_string();
        assert!(e.contains("size") && e.contains("Q4_K_M"), "{e}");
        assert!(SizeTarget::parse("0bpw").is_err());
        assert!(SizeTarget::parse("99bpw").is_err());
    }

    fn model() -> Model {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets"));
        Model::load(dir).unwrap()
    }

    #[test]
    fn a_size_below_the_smallest_plan_or_above_f16_is_refused_naming_both() {
        let m = model();
        let menu = [
            WeightFormat::Ggml(GgmlType::Q4K),
            WeightFormat::Ggml(GgmlType::Q8_0),
        ];
        let e = Budget::resolve(&m, &SizeTarget::FileBytes(1000), &menu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1000-byte") || e.contains("below"), "{e}");
        assert!(e.contains("smallest"), "{e}");
        let e = Budget::resolve(&m, &SizeTarget::Bpw(20.0), &menu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("above") && e.contains("f16"), "{e}");
    }

    #[test]
    fn a_llama_type_budgets_its_mix_bytes_and_converts_back_exactly() {
        let m = model();
        let menu = [
            WeightFormat::Ggml(GgmlType::Q2K),
            WeightFormat::Ggml(GgmlType::Q8_0),
        ];
        let b = Budget::resolve(&m, &SizeTarget::Llama(LlamaFtype::Q4_K_M), &menu).unwrap();
        let mix = b.mix.as_ref().unwrap();
        assert_eq!(b.planned_bytes, mix.size_bytes(&m));
        assert_eq!((b.max_size_mb() * 1e6) as u64, b.planned_bytes);
        let bpw = b.bpw(&m);
        assert!(bpw > 4.5 && bpw < 6.0, "{bpw}");
    }
}
