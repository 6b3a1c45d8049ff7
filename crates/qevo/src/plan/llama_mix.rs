//! llama.cpp's named quantization mixes (`llama-quantize MODEL OUT Q4_K_M`) as qevo plans:
//! the closed table of file types llama-quantize accepts, and the per-tensor type its
//! mix rules (`llama_tensor_get_type` in llama-quant.cpp) give each tensor of a model.
//! `qevo gguf --size Q4_K_M` budgets the size of that mix; the search seeds and compares
//! against it. The rules are llama.cpp's, restated as pure functions of a tensor's
//! category, its rank among the tensors of that category, and the model's shape; tests
//! check them against llama-quantize's own output.

use crate::error::{Error, Result};
use crate::model::{ArchKind, Model};
use crate::plan::{TensorChoice, TensorPlan};
use crate::quant::{GgmlType, WeightFormat};

/// A file type llama-quantize makes (its `QUANT_OPTIONS`, without the types qevo does not
/// write: Q1_0, Q2_0, TQ1_0, TQ2_0, MXFP4_MOE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum LlamaFtype {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q2_K_S,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ1_S,
    IQ1_M,
    IQ2_XXS,
    IQ2_XS,
    IQ2_S,
    IQ2_M,
    IQ3_XXS,
    IQ3_XS,
    IQ3_S,
    IQ3_M,
    IQ4_NL,
    IQ4_XS,
    F16,
    BF16,
    F32,
}

use LlamaFtype as F;

/// Name (as llama-quantize spells it), llama.h's `LLAMA_FTYPE_*` number, and the default
/// tensor type (`llama_ftype_get_default_type`).
const FTYPES: [(LlamaFtype, &str, u32, GgmlType); 30] = [
    (F::Q4_0, "Q4_0", 2, GgmlType::Q4_0),
    (F::Q4_1, "Q4_1", 3, GgmlType::Q4_1),
    (F::Q5_0, "Q5_0", 8, GgmlType::Q5_0),
    (F::Q5_1, "Q5_1", 9, GgmlType::Q5_1),
    (F::Q8_0, "Q8_0", 7, GgmlType::Q8_0),
    (F::Q2_K, "Q2_K", 10, GgmlType::Q2K),
    (F::Q2_K_S, "Q2_K_S", 21, GgmlType::Q2K),
    (F::Q3_K_S, "Q3_K_S", 11, GgmlType::Q3K),
    (F::Q3_K_M, "Q3_K_M", 12, GgmlType::Q3K),
    (F::Q3_K_L, "Q3_K_L", 13, GgmlType::Q3K),
    (F::Q4_K_S, "Q4_K_S", 14, GgmlType::Q4K),
    (F::Q4_K_M, "Q4_K_M", 15, GgmlType::Q4K),
    (F::Q5_K_S, "Q5_K_S", 16, GgmlType::Q5K),
    (F::Q5_K_M, "Q5_K_M", 17, GgmlType::Q5K),
    (F::Q6_K, "Q6_K", 18, GgmlType::Q6K),
    (F::IQ1_S, "IQ1_S", 24, GgmlType::Iq1S),
    (F::IQ1_M, "IQ1_M", 31, GgmlType::Iq1M),
    (F::IQ2_XXS, "IQ2_XXS", 19, GgmlType::Iq2Xxs),
    (F::IQ2_XS, "IQ2_XS", 20, GgmlType::Iq2Xs),
    (F::IQ2_S, "IQ2_S", 28, GgmlType::Iq2Xs),
    (F::IQ2_M, "IQ2_M", 29, GgmlType::Iq2S),
    (F::IQ3_XXS, "IQ3_XXS", 23, GgmlType::Iq3Xxs),
    (F::IQ3_XS, "IQ3_XS", 22, GgmlType::Iq3S),
    (F::IQ3_S, "IQ3_S", 26, GgmlType::Iq3S),
    (F::IQ3_M, "IQ3_M", 27, GgmlType::Iq3S),
    (F::IQ4_NL, "IQ4_NL", 25, GgmlType::Iq4Nl),
    (F::IQ4_XS, "IQ4_XS", 30, GgmlType::Iq4Xs),
    (F::F16, "F16", 1, GgmlType::F16),
    (F::BF16, "BF16", 32, GgmlType::BF16),
    (F::F32, "F32", 0, GgmlType::F32),
];

/// llama-quantize's aliases.
const ALIASES: [(&str, LlamaFtype); 3] = [
    ("Q3_K", F::Q3_K_M),
    ("Q4_K", F::Q4_K_M),
    ("Q5_K", F::Q5_K_M),
];

/// Names llama-quantize knows whose tensor types qevo does not write.
const NOT_WRITTEN: [&str; 5] = ["Q1_0", "Q2_0", "TQ1_0", "TQ2_0", "MXFP4_MOE"];

impl LlamaFtype {
    pub const ALL: [LlamaFtype; 30] = {
        let mut all = [F::F32; 30];
        let mut i = 0;
        while i < 30 {
            all[i] = FTYPES[i].0;
            i += 1;
        }
        all
    };

    fn row(self) -> &'static (LlamaFtype, &'static str, u32, GgmlType) {
        // Every variant has its row: the table and the enum are checked against each other.
        FTYPES.iter().find(|r| r.0 == self).unwrap_or(&FTYPES[0])
    }
    /// The name llama-quantize takes (`Q4_K_M`).
    pub fn name(self) -> &'static str {
        self.row().1
    }
    /// llama.h's `LLAMA_FTYPE_MOSTLY_*` number (`general.file_type`).
    pub fn number(self) -> u32 {
        self.row().2
    }
    /// The type of every tensor the mix rules leave alone.
    pub fn default_type(self) -> GgmlType {
        self.row().3
    }

    /// A name as llama-quantize takes it (case-insensitive, aliases included); an unknown
    /// name is an error listing the valid ones.
    pub fn parse(s: &str) -> Result<LlamaFtype> {
        let up = s.trim().to_ascii_uppercase();
        if let Some(r) = FTYPES.iter().find(|r| r.1 == up) {
            return Ok(r.0);
        }
        if let Some((_, f)) = ALIASES.iter().find(|(a, _)| *a == up) {
            return Ok(*f);
        }
        let valid: Vec<&str> = FTYPES.iter().map(|r| r.1).collect();
        Err(Error::Invalid(match NOT_WRITTEN.contains(&up.as_str()) {
            true => format!(
                "llama.cpp type {s}: qevo does not write its tensor types; valid: {}",
                valid.join(", ")
            ),
            false => format!(
                "unknown llama.cpp type {s:?}; valid: {} (aliases Q3_K, Q4_K, Q5_K)",
                valid.join(", ")
            ),
        }))
    }

    /// The IQ mixes of 1–2.x bits, which share one set of rules.
    fn is_low_iq(self) -> bool {
        matches!(
            self,
            F::IQ2_XXS | F::IQ2_XS | F::IQ1_S | F::IQ2_S | F::IQ2_M | F::IQ1_M
        )
    }
}

impl std::fmt::Display for LlamaFtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// llama.cpp's broad tensor categories (`tensor_get_category`), by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

/// Substrings in llama.cpp's order of precedence (after the two exact names).
const CATEGORY_PATTERNS: [(&str, Category); 9] = [
    ("attn_qkv.weight", Category::AttnQkv),
    ("attn_kv_b.weight", Category::AttnKvB),
    ("attn_v.weight", Category::AttnV),
    ("attn_k.weight", Category::AttnK),
    ("attn_q.weight", Category::AttnQ),
    ("attn_output.weight", Category::AttnOutput),
    ("ffn_up", Category::FfnUp),
    ("ffn_gate", Category::FfnGate),
    ("ffn_down", Category::FfnDown),
];

fn category(name: &str) -> Category {
    match name {
        "output.weight" => Category::Output,
        "token_embd.weight" | "per_layer_token_embd.weight" => Category::TokenEmbd,
        _ => CATEGORY_PATTERNS
            .iter()
            .find(|(p, _)| name.contains(p))
            .map_or(Category::Other, |(_, c)| *c),
    }
}

impl Category {
    /// The attention-v-like tensors, which llama.cpp counts and treats as most sensitive.
    fn is_attn_v(self) -> bool {
        matches!(
            self,
            Category::AttnV | Category::AttnQkv | Category::AttnKvB
        )
    }
}

/// What the mix rules read of the model (llama.cpp's hparams and quantize state).
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// `n_head / n_head_kv`.
    gqa: usize,
    n_expert: usize,
    n_layer: usize,
    /// llama.cpp's LLM_TYPE_70B: a llama-arch model of 80 layers with grouped KV heads.
    is_70b: bool,
    /// No `output.weight`: the embedding is quantized by the output's rule.
    tied: bool,
    has_imatrix: bool,
}

impl Shape {
    fn of(model: &Model, has_imatrix: bool) -> Shape {
        let a = model.arch.attention();
        let n_layer = model.arch.n_blocks();
        let llama_arch = matches!(
            model.arch.kind(),
            ArchKind::Llama | ArchKind::Mistral | ArchKind::Mixtral
        );
        Shape {
            gqa: a.n_heads.checked_div(a.n_kv_heads).unwrap_or(0),
            n_expert: model
                .tensors
                .iter()
                .filter_map(|t| t.experts.map(|e| e.total))
                .max()
                .unwrap_or(0),
            n_layer,
            is_70b: llama_arch && n_layer == 80 && a.n_heads != a.n_kv_heads,
            tied: !model.tensors.iter().any(|t| t.name == "output.weight"),
            has_imatrix,
        }
    }
}

/// Where a tensor sits: its category, its rank among the attention-v-like or ffn tensors
/// of its category in llama.cpp's order (by block, then name), and its block.
#[derive(Debug, Clone, Copy)]
struct Place {
    cat: Category,
    /// Rank among tensors of the same counted category (llama.cpp's `i_*` counters).
    rank: usize,
    /// How many attention-v-like tensors the model has (`n_attention_wv`).
    n_attn_v: usize,
    block: Option<usize>,
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third
/// one between.
fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The per-tensor types of `ftype`'s mix for `model` (with an importance matrix or not:
/// a few rules differ), after llama.cpp's fallback for rows the type's blocks do not
/// divide. Activations stay float: a GGUF runs weights only.
pub fn mix_plan(model: &Model, ftype: LlamaFtype, has_imatrix: bool) -> TensorPlan {
    let shape = Shape::of(model, has_imatrix);
    let entries = places(model)
        .into_iter()
        .zip(&model.tensors)
        .map(|(place, t)| {
            let ty = mix_type(ftype, &shape, place, t.cols);
            let format = WeightFormat::Ggml(ty.for_cols(t.cols));
            (
                t.name.clone(),
                TensorChoice {
                    format,
                    act_bits: 16,
                },
            )
        })
        .collect();
    TensorPlan { entries }
}

/// Every tensor's place, indexed like `model.tensors`.
fn places(model: &Model) -> Vec<Place> {
    let block = |name: &str| {
        name.strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse::<usize>().ok())
    };
    // llama.cpp visits tensors by block (non-block tensors first), then by name.
    let mut order: Vec<usize> = (0..model.tensors.len()).collect();
    order.sort_by_key(|&i| {
        let n = &model.tensors[i].name;
        (block(n).map_or(-1, |b| b as i64), n.clone())
    });
    let cats: Vec<Category> = model.tensors.iter().map(|t| category(&t.name)).collect();
    let n_attn_v = cats.iter().filter(|c| c.is_attn_v()).count();
    let mut rank = vec![0; model.tensors.len()];
    let mut seen: Vec<(Category, usize)> = Vec::new();
    for &i in &order {
        let key = match cats[i].is_attn_v() {
            true => Category::AttnV,
            false => cats[i],
        };
        match seen.iter_mut().find(|(c, _)| *c == key) {
            Some((_, n)) => {
                rank[i] = *n;
                *n += 1;
            }
            None => seen.push((key, 1)),
        }
    }
    (0..model.tensors.len())
        .map(|i| Place {
            cat: cats[i],
            rank: rank[i],
            n_attn_v,
            block: block(&model.tensors[i].name),
        })
        .collect()
}

/// `llama_tensor_get_type_impl` for one tensor, before the shape fallback.
fn mix_type(ftype: LlamaFtype, s: &Shape, p: Place, cols: usize) -> GgmlType {
    let default = ftype.default_type();
    if !default.is_quantized() {
        return default;
    }
    if p.cat == Category::Output || (s.tied && p.cat == Category::TokenEmbd) {
        return output_type(ftype, default, cols);
    }
    if p.cat == Category::TokenEmbd {
        return embd_type(ftype).unwrap_or(default);
    }
    if ftype.is_low_iq() {
        return low_iq_type(ftype, s, p).unwrap_or(default);
    }
    match p.cat {
        c if c.is_attn_v() => attn_v_type(ftype, s, p).unwrap_or(default),
        Category::AttnK => attn_k_type(ftype, s).unwrap_or(default),
        Category::AttnQ => attn_q_type(ftype).unwrap_or(default),
        Category::FfnDown => ffn_down_type(ftype, s, p).unwrap_or(default),
        Category::AttnOutput => attn_output_type(ftype, s).unwrap_or(default),
        Category::FfnGate | Category::FfnUp => ffn_gate_up_type(ftype, s, p).unwrap_or(default),
        _ => default,
    }
}

/// The output matrix (and a tied embedding).
fn output_type(ftype: LlamaFtype, default: GgmlType, cols: usize) -> GgmlType {
    if !cols.is_multiple_of(default.block_len()) {
        GgmlType::Q8_0
    } else if ftype.is_low_iq() || ftype == F::IQ3_XXS {
        GgmlType::Q5K
    } else if default != GgmlType::Q8_0 {
        GgmlType::Q6K
    } else {
        default
    }
}

/// An untied token embedding.
fn embd_type(ftype: LlamaFtype) -> Option<GgmlType> {
    match ftype {
        F::IQ2_XXS | F::IQ2_XS | F::IQ1_S | F::IQ1_M => Some(GgmlType::Q2K),
        F::IQ2_S | F::IQ2_M | F::IQ3_XXS => Some(GgmlType::Iq3S),
        _ => None,
    }
}

/// Every tensor of the 1–2.x-bit IQ mixes.
fn low_iq_type(ftype: LlamaFtype, s: &Shape, p: Place) -> Option<GgmlType> {
    let s_or_m = matches!(ftype, F::IQ2_S | F::IQ2_M);
    match p.cat {
        c if c.is_attn_v() => Some(match (s.gqa >= 4 || s.n_expert >= 4, s_or_m) {
            (true, _) => GgmlType::Q4K,
            (false, true) => GgmlType::Iq3S,
            (false, false) => GgmlType::Q2K,
        }),
        Category::AttnK if s.n_expert == 8 => Some(GgmlType::Q4K),
        Category::FfnDown if p.rank < s.n_layer / 8 => Some(match s_or_m {
            true => GgmlType::Iq3S,
            false => GgmlType::Q2K,
        }),
        Category::AttnOutput if s.n_expert == 8 => Some(GgmlType::Q5K),
        Category::AttnOutput => match ftype {
            F::IQ1_S | F::IQ1_M => Some(GgmlType::Iq2Xxs),
            F::IQ2_S | F::IQ2_M => Some(GgmlType::Iq3S),
            _ => None,
        },
        _ => None,
    }
}

fn attn_v_type(ftype: LlamaFtype, s: &Shape, p: Place) -> Option<GgmlType> {
    let gqa4 = s.gqa >= 4;
    let ty = match ftype {
        F::Q2_K => Some(if gqa4 { GgmlType::Q4K } else { GgmlType::Q3K }),
        F::Q2_K_S if gqa4 => Some(GgmlType::Q4K),
        F::IQ3_XXS => Some(match (gqa4, s.has_imatrix) {
            (true, _) => GgmlType::Q4K,
            (false, false) => GgmlType::Iq3S,
            (false, true) => GgmlType::Iq3Xxs,
        }),
        F::IQ3_XS | F::IQ3_S if gqa4 => Some(GgmlType::Q4K),
        F::IQ3_M => Some(GgmlType::Q4K),
        F::Q3_K_M => Some(match p.rank < 2 {
            true => GgmlType::Q5K,
            false => GgmlType::Q4K,
        }),
        F::Q3_K_L => Some(GgmlType::Q5K),
        F::IQ4_NL | F::IQ4_XS if gqa4 => Some(GgmlType::Q5K),
        F::Q4_K_M | F::Q5_K_M if use_more_bits(p.rank, p.n_attn_v) => Some(GgmlType::Q6K),
        F::Q4_K_S if p.rank < 4 => Some(GgmlType::Q5K),
        _ => None,
    };
    let ty = match (s.is_70b, ty.unwrap_or(ftype.default_type())) {
        // 8 heads share each attn_v of a 70B: more bits cost almost nothing.
        (true, GgmlType::Q3K | GgmlType::Q4K) => Some(GgmlType::Q5K),
        _ => ty,
    };
    match s.n_expert == 8 {
        true => Some(GgmlType::Q8_0),
        false => ty,
    }
}

fn attn_k_type(ftype: LlamaFtype, s: &Shape) -> Option<GgmlType> {
    match ftype {
        _ if s.n_expert == 8 => Some(GgmlType::Q8_0),
        F::IQ3_XS => Some(GgmlType::Iq3Xxs),
        F::IQ3_XXS => Some(GgmlType::Iq2S),
        _ => None,
    }
}

fn attn_q_type(ftype: LlamaFtype) -> Option<GgmlType> {
    match ftype {
        F::IQ3_XS => Some(GgmlType::Iq3Xxs),
        F::IQ3_XXS => Some(GgmlType::Iq2S),
        _ => None,
    }
}

/// The layer an ffn tensor counts as: its block in a mixture of experts (llama.cpp parses
/// the name there), its rank among its category otherwise.
fn ffn_layer(s: &Shape, p: Place) -> usize {
    match (s.n_expert > 1, p.block) {
        (true, Some(b)) => b,
        _ => p.rank,
    }
}

fn ffn_down_type(ftype: LlamaFtype, s: &Shape, p: Place) -> Option<GgmlType> {
    let (i, n) = (ffn_layer(s, p), s.n_layer);
    let first_eighth = i < n / 8;
    match ftype {
        F::Q2_K => Some(GgmlType::Q3K),
        F::Q2_K_S => first_eighth.then_some(GgmlType::Q4K),
        F::IQ3_XXS if !s.has_imatrix => Some(match first_eighth {
            true => GgmlType::Q4K,
            false => GgmlType::Q3K,
        }),
        F::Q3_K_M => Some(match i < n / 16 {
            true => GgmlType::Q5K,
            false => GgmlType::Q4K,
        }),
        F::IQ3_M if first_eighth || (s.n_expert == 8 && use_more_bits(i, n)) => Some(GgmlType::Q4K),
        F::Q3_K_L => Some(GgmlType::Q5K),
        F::Q4_K_M => use_more_bits(i, n).then_some(GgmlType::Q6K),
        F::IQ4_NL | F::IQ4_XS if first_eighth && !s.has_imatrix => Some(GgmlType::Q5K),
        F::Q5_K_M => use_more_bits(i, n).then_some(GgmlType::Q6K),
        F::Q4_K_S => first_eighth.then_some(GgmlType::Q5K),
        // Guards the first ffn_down layers, with an imatrix only (llama.cpp's choice).
        F::Q4_0 if s.has_imatrix && first_eighth => Some(GgmlType::Q4_1),
        F::Q5_0 if s.has_imatrix && first_eighth => Some(GgmlType::Q5_1),
        _ => None,
    }
}

fn attn_output_type(ftype: LlamaFtype, s: &Shape) -> Option<GgmlType> {
    if s.n_expert == 8 {
        return matches!(
            ftype,
            F::Q2_K
                | F::IQ3_XS
                | F::IQ3_XXS
                | F::Q3_K_S
                | F::Q3_K_M
                | F::IQ4_NL
                | F::Q4_K_S
                | F::Q4_K_M
                | F::IQ3_S
                | F::IQ3_M
                | F::IQ4_XS
        )
        .then_some(GgmlType::Q5K);
    }
    match ftype {
        F::Q2_K => Some(GgmlType::Q3K),
        F::IQ3_XXS => Some(GgmlType::Iq3S),
        F::Q3_K_M | F::IQ3_M => Some(GgmlType::Q4K),
        F::Q3_K_L => Some(GgmlType::Q5K),
        _ => None,
    }
}

/// ffn_gate and ffn_up; llama.cpp's fused `attn_qkv` rule never applies to qevo's
/// tensors, which are split (the attention-v rule covers `attn_qkv` by name otherwise).
fn ffn_gate_up_type(ftype: LlamaFtype, s: &Shape, p: Place) -> Option<GgmlType> {
    let (i, n) = (ffn_layer(s, p), s.n_layer);
    (ftype == F::IQ3_XS && i >= n / 8 && i < 7 * n / 8).then_some(GgmlType::Iq3Xxs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ftype_has_one_row_and_parses_by_its_name() {
        for f in LlamaFtype::ALL {
            assert_eq!(FTYPES.iter().filter(|r| r.0 == f).count(), 1, "{f}");
            assert_eq!(LlamaFtype::parse(f.name()).unwrap(), f);
            assert_eq!(LlamaFtype::parse(&f.name().to_lowercase()).unwrap(), f);
        }
        assert_eq!(LlamaFtype::parse("Q4_K").unwrap(), F::Q4_K_M);
    }

    #[test]
    fn an_unknown_llama_type_lists_the_valid_ones() {
        let e = LlamaFtype::parse("Q4_K_X").unwrap_err().to_string();
        assert!(
            e.contains("Q4_K_X") && e.contains("Q4_K_M") && e.contains("IQ2_XXS"),
            "{e}"
        );
        let e = LlamaFtype::parse("TQ1_0").unwrap_err().to_string();
        assert!(e.contains("does not write"), "{e}");
    }

    #[test]
    fn use_more_bits_marks_llama_cpps_layers() {
        let marked: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            marked,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    #[test]
    fn categories_follow_llama_cpps_name_rules() {
        assert_eq!(category("output.weight"), Category::Output);
        assert_eq!(category("token_embd.weight"), Category::TokenEmbd);
        assert_eq!(category("blk.3.attn_v.weight"), Category::AttnV);
        assert_eq!(category("blk.3.attn_qkv.weight"), Category::AttnQkv);
        assert_eq!(category("blk.3.ffn_down_exps.weight"), Category::FfnDown);
        assert_eq!(category("blk.3.ffn_gate_inp.weight"), Category::FfnGate);
        assert_eq!(category("blk.3.attn_norm.weight"), Category::Other);
    }
}
