//! The compressed-tensors `pack-quantized` layout (as read from the `compressed_tensors`
//! package ≥ 0.18, `compressors/pack_quantized`), for qevo's generic integer formats: which
//! formats it can hold (`CtScheme::for_format`, with the reason when it cannot), the
//! tensors one packed weight becomes (`ct_tensors`), and the `quantization_config` entry
//! of `config.json` (`quantization_config`). Pure functions: no I/O.
//!
//! A quantized Linear `<module>` of shape `[rows, cols]` with `b`-bit codes is stored as
//!
//! | tensor | dtype | shape | content |
//! | --- | --- | --- | --- |
//! | `<module>.weight_packed` | I32 | `[rows, ⌈cols·b/32⌉]` | each row's codes `u = q + 2^(b-1)`, code `i` at bits `i·b .. i·b+b` of the row's little-endian stream of 32-bit words, the last word zero-padded; a row always starts a new word |
//! | `<module>.weight_scale` | F16 | tensor `[1]`, channel `[rows, 1]`, group `[rows, cols/g]` | qevo's f16 scales, group order row-major |
//! | `<module>.weight_zero_point` | asymmetric only | channel / group: I32 `[⌈rows·b/32⌉, G]`; tensor: I8 `[1]` | channel and group: column `j` holds the `rows` zero points `z` of group `j`, packed like a row of codes; tensor: `z − 2^(b-1)` unpacked (compressed-tensors packs zero points only for those two strategies) |
//! | `<module>.weight_shape` | I64 | `[2]` | `[rows, cols]` |
//!
//! and decodes to `x = scale · (u − z)` (`z = 2^(b-1)` when symmetric): exactly qevo's
//! dequantization, so the weights compressed-tensors decompresses are the ones qevo scored.
//! The signed values compressed-tensors works with (`q`, and its zero point `z − 2^(b-1)`)
//! are shifted by the same `2^(b-1)` before packing, so the packed unsigned values are
//! qevo's own codes and zero points.
//!
//! What it cannot hold, and so is refused: power-of-two scales (it has no exponent scale
//! type), a group size that does not divide the columns (qevo's ragged last group;
//! compressed-tensors requires `cols % group_size == 0`), and widths outside 1..=8.

use crate::quant::int::{pack_bits, unpack_bits};
use crate::quant::{Granularity, IntFormat, Scheme};

/// `quant_method` in config.json.
pub const QUANT_METHOD: &str = "compressed-tensors";
/// The compression format of every quantized module.
pub const FORMAT: &str = "pack-quantized";
/// Widths `pack_to_int32` accepts.
const BITS: std::ops::RangeInclusive<u8> = 1..=8;

/// compressed-tensors' `QuantizationStrategy` for weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CtStrategy {
    Tensor,
    Channel,
    Group(u32),
}

/// One `config_groups` scheme: the weights' `QuantizationArgs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtScheme {
    pub bits: u8,
    pub symmetric: bool,
    pub strategy: CtStrategy,
}

impl CtScheme {
    /// The scheme holding `f` on a tensor of `cols` columns, or why there is none.
    pub fn for_format(f: IntFormat, cols: usize) -> Result<CtScheme, String> {
        if !BITS.contains(&f.bits) {
            return Err(format!(
                "{} bits: compressed-tensors packs 1 to 8 bits",
                f.bits
            ));
        }
        let symmetric = match f.scheme {
            Scheme::Sym => true,
            Scheme::Asym => false,
            Scheme::Pow2 => {
                return Err(
                    "power-of-two scales (i8 exponents) have no compressed-tensors form; \
                            export this plan as qevo-int packed safetensors"
                        .to_string(),
                )
            }
        };
        let strategy = match f.granularity {
            Granularity::Tensor => CtStrategy::Tensor,
            Granularity::Channel => CtStrategy::Channel,
            Granularity::Group(g) if cols.is_multiple_of(g as usize) => CtStrategy::Group(g),
            Granularity::Group(g) => {
                return Err(format!(
                    "group size {g} does not divide its {cols} columns: qevo's ragged last group \
                     has no compressed-tensors form (it requires cols % group_size == 0)"
                ))
            }
        };
        Ok(CtScheme {
            bits: f.bits,
            symmetric,
            strategy,
        })
    }

    /// The weights' `QuantizationArgs` as compressed-tensors serializes them.
    pub fn weights_json(&self) -> serde_json::Value {
        let (strategy, group_size) = match self.strategy {
            CtStrategy::Tensor => ("tensor", serde_json::Value::Null),
            CtStrategy::Channel => ("channel", serde_json::Value::Null),
            CtStrategy::Group(g) => ("group", g.into()),
        };
        serde_json::json!({
            "num_bits": self.bits,
            "type": "int",
            "symmetric": self.symmetric,
            "group_size": group_size,
            "strategy": strategy,
            "dynamic": false,
        })
    }
}

/// safetensors dtypes the layout uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtDtype {
    I32,
    F16,
    I8,
    I64,
}

/// One stored tensor of a packed weight: `<module>.<suffix>`.
#[derive(Debug, Clone, PartialEq)]
pub struct CtTensor {
    pub suffix: &'static str,
    pub dtype: CtDtype,
    pub shape: Vec<usize>,
    /// Little-endian bytes.
    pub bytes: Vec<u8>,
}

/// 32-bit words a run of `n` codes of `bits` bits takes.
pub fn words(n: usize, bits: u8) -> usize {
    (n * bits as usize).div_ceil(32)
}

/// Packs each run of `len` codes into its own `words(len, bits)` little-endian words.
fn pack_runs(codes: &[u8], len: usize, bits: u8) -> Vec<u8> {
    let run_bytes = 4 * words(len, bits);
    let mut out = vec![0u8; run_bytes * codes.len().div_ceil(len.max(1))];
    for (run, o) in codes.chunks(len.max(1)).zip(out.chunks_mut(run_bytes)) {
        pack_bits(run, bits, o);
    }
    out
}

/// Transposes row-major `[rows, cols]` bytes-per-element data to `[cols, rows]`.
fn transpose<T: Copy>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| v[r * cols + c]))
        .collect()
}

/// One stored tensor of a packed weight as a header declares it, before its bytes exist.
#[derive(Debug, Clone, PartialEq)]
pub struct CtHead {
    pub suffix: &'static str,
    pub dtype: CtDtype,
    pub shape: Vec<usize>,
}

/// The tensors `ct_tensors` makes of a `[rows, cols]` weight in format `f`, in its
/// order, from the shape alone: what a streamed file declares before the weight is
/// quantized. `scheme` is `CtScheme::for_format(f, cols)`.
pub fn ct_heads(f: IntFormat, scheme: CtScheme, rows: usize, cols: usize) -> Vec<CtHead> {
    let head = |suffix, dtype, shape| CtHead {
        suffix,
        dtype,
        shape,
    };
    let per_row = f.group_count(rows, cols) / rows.max(1);
    let mut out = vec![
        head(
            "weight_packed",
            CtDtype::I32,
            vec![rows, words(cols, f.bits)],
        ),
        head(
            "weight_scale",
            CtDtype::F16,
            match scheme.strategy {
                CtStrategy::Tensor => vec![1],
                _ => vec![rows, per_row],
            },
        ),
    ];
    if !scheme.symmetric {
        out.push(match scheme.strategy {
            CtStrategy::Tensor => head("weight_zero_point", CtDtype::I8, vec![1]),
            _ => head(
                "weight_zero_point",
                CtDtype::I32,
                vec![words(rows, f.bits), per_row],
            ),
        });
    }
    out.push(head("weight_shape", CtDtype::I64, vec![2]));
    out
}

/// The tensors of one weight in format `f`, from its qevo-int packed bytes (`IntFormat`'s
/// layout: scales, zero points, codes), named and shaped as `ct_heads` declares them.
/// `scheme` is `CtScheme::for_format(f, cols)`; the caller has checked `packed.len()`
/// against `f.tensor_bytes(rows, cols)`.
pub fn ct_tensors(
    f: IntFormat,
    scheme: CtScheme,
    rows: usize,
    cols: usize,
    packed: &[u8],
) -> Vec<CtTensor> {
    let (sb, zb, _) = f.sections(rows, cols);
    let groups = f.group_count(rows, cols);
    let mut codes = vec![0u8; rows * cols];
    unpack_bits(&packed[sb + zb..], f.bits, &mut codes);
    // In `ct_heads`' order: codes, scales, zero points (asymmetric only), shape.
    let mut bytes = vec![pack_runs(&codes, cols, f.bits), packed[..sb].to_vec()];
    if !scheme.symmetric {
        let mut zeros = vec![0u8; groups];
        unpack_bits(&packed[sb..sb + zb], f.bits, &mut zeros);
        bytes.push(zero_point_tensor(scheme, &zeros, rows, f.bits).bytes);
    }
    bytes.push(
        [rows as i64, cols as i64]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    );
    ct_heads(f, scheme, rows, cols)
        .into_iter()
        .zip(bytes)
        .map(|(h, bytes)| CtTensor {
            suffix: h.suffix,
            dtype: h.dtype,
            shape: h.shape,
            bytes,
        })
        .collect()
}

/// `weight_zero_point` from the unsigned zero points `z` in group order (`[rows, G]`).
fn zero_point_tensor(scheme: CtScheme, zeros: &[u8], rows: usize, bits: u8) -> CtTensor {
    if scheme.strategy == CtStrategy::Tensor {
        // Unpacked, in compressed-tensors' signed domain.
        let signed = (zeros[0] as i16 - (1i16 << (bits - 1))) as i8;
        return CtTensor {
            suffix: "weight_zero_point",
            dtype: CtDtype::I8,
            shape: vec![1],
            bytes: vec![signed as u8],
        };
    }
    let g = zeros.len() / rows;
    // Packed along dim 0: each group's column of `rows` zero points is one packed run,
    // and the runs are the columns of the `[words, G]` result.
    let runs = pack_runs(&transpose(zeros, rows, g), rows, bits);
    let w = words(rows, bits);
    let word_list: Vec<[u8; 4]> = runs
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect();
    CtTensor {
        suffix: "weight_zero_point",
        dtype: CtDtype::I32,
        shape: vec![w, g],
        bytes: transpose(&word_list, g, w).concat(),
    }
}

/// One planned module of the model: its name (`model.layers.0.self_attn.q_proj`) and the
/// scheme it is stored in, or `None` when it stays float.
#[derive(Debug, Clone, PartialEq)]
pub struct CtModule {
    pub name: String,
    pub scheme: Option<CtScheme>,
}

/// The `quantization_config` of config.json: one `config_groups` entry per distinct
/// scheme (numbered in order of first use), each targeting its modules by exact name,
/// and every float module in `ignore`.
pub fn quantization_config(modules: &[CtModule]) -> serde_json::Value {
    let mut schemes: Vec<(CtScheme, Vec<&str>)> = Vec::new();
    for m in modules {
        let Some(s) = m.scheme else { continue };
        match schemes.iter_mut().find(|(k, _)| *k == s) {
            Some((_, targets)) => targets.push(&m.name),
            None => schemes.push((s, vec![&m.name])),
        }
    }
    let groups: serde_json::Map<String, serde_json::Value> = schemes
        .iter()
        .enumerate()
        .map(|(i, (s, targets))| {
            let entry = serde_json::json!({
                "targets": targets,
                "weights": s.weights_json(),
                "input_activations": null,
                "output_activations": null,
                "format": FORMAT,
            });
            (format!("group_{i}"), entry)
        })
        .collect();
    let ignore: Vec<&str> = modules
        .iter()
        .filter(|m| m.scheme.is_none())
        .map(|m| m.name.as_str())
        .collect();
    serde_json::json!({
        "quant_method": QUANT_METHOD,
        "format": FORMAT,
        "quantization_status": "compressed",
        "config_groups": groups,
        "ignore": ignore,
        "kv_cache_scheme": null,
        "global_compression_ratio": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::WeightFormat;

    fn le_words(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// What a streamed header declares for a weight is what `ct_tensors` then makes:
    /// every part's bytes are its declared elements times its dtype's width.
    #[test]
    fn heads_declare_the_lengths_ct_tensors_makes() {
        let width = |d: CtDtype| match d {
            CtDtype::I8 => 1,
            CtDtype::F16 => 2,
            CtDtype::I32 => 4,
            CtDtype::I64 => 8,
        };
        for name in [
            "int4-sym-g32",
            "int4-asym-g64",
            "int8-sym-channel",
            "int3-asym-channel",
            "int2-asym-tensor",
            "int8-sym-tensor",
            "int5-asym-g32",
        ] {
            let WeightFormat::Int(f) = WeightFormat::parse(name).unwrap() else {
                panic!("{name} is not an integer format")
            };
            let (rows, cols) = (7, 128);
            let scheme = CtScheme::for_format(f, cols).unwrap();
            let n = f.tensor_bytes(rows, cols).unwrap() as usize;
            let packed: Vec<u8> = (0..n).map(|i| (i * 37 % 251) as u8).collect();
            let made = ct_tensors(f, scheme, rows, cols, &packed);
            let heads = ct_heads(f, scheme, rows, cols);
            assert_eq!(made.len(), heads.len(), "{name}");
            for (t, h) in made.iter().zip(&heads) {
                assert_eq!((t.suffix, t.dtype, &t.shape), (h.suffix, h.dtype, &h.shape));
                let declared = h.shape.iter().product::<usize>() * width(h.dtype);
                assert_eq!(t.bytes.len(), declared, "{name} {}", h.suffix);
            }
        }
    }

    /// Words computed by compressed_tensors 0.20.1's own `pack_to_int32` (packed_dim=1)
    /// for one row of signed values `u − 2^(b-1)`, `u_i = (7i + 3) mod 2^b`, printed as
    /// unsigned 32-bit.
    #[test]
    fn rows_pack_like_compressed_tensors() {
        let golden: [(u8, usize, &[u32]); 7] = [
            (3, 13, &[1402433619, 112]),
            (5, 7, &[1308378435, 3]),
            (
                6,
                40,
                &[
                    2673939075, 2428228313, 2992084800, 2401246899, 2628489685, 1901299459,
                    3219331747, 20689,
                ],
            ),
            (
                7,
                37,
                &[
                    4077143299, 996717873, 4118418017, 2104744342, 1957753088, 240724808,
                    3109450872, 4280055139, 7,
                ],
            ),
            (2, 17, &[454761243, 3]),
            (4, 9, &[1299153315, 11]),
            (8, 5, &[403769859, 31]),
        ];
        for (bits, n, want) in golden {
            let u: Vec<u8> = (0..n).map(|i| ((7 * i + 3) % (1 << bits)) as u8).collect();
            // Two identical rows: each starts its own word.
            let twice: Vec<u8> = u.iter().chain(&u).copied().collect();
            let words = le_words(&pack_runs(&twice, n, bits));
            assert_eq!(words.len(), 2 * want.len(), "bits {bits}");
            assert_eq!(&words[..want.len()], want, "bits {bits}");
            assert_eq!(&words[want.len()..], want, "bits {bits}");
        }
    }

    /// Zero points `[rows, G]`, `u[r][g] = (3r + 5g + 1) mod 2^b`, packed along dim 0 by
    /// compressed_tensors 0.20.1's `pack_to_int32(.., packed_dim=0)`.
    #[test]
    fn zero_points_pack_down_the_columns_like_compressed_tensors() {
        type Case<'a> = (u8, usize, usize, Vec<usize>, &'a [u32]);
        let cases: [Case; 2] = [
            (3, 5, 2, vec![1, 2], &[21985, 12046]),
            (
                5,
                9,
                3,
                vec![2, 3],
                &[3772062849, 724021542, 1970947531, 6580, 7902, 775],
            ),
        ];
        for (bits, rows, g, shape, want) in cases {
            let z: Vec<u8> = (0..rows)
                .flat_map(|r| (0..g).map(move |c| ((3 * r + 5 * c + 1) % (1 << bits)) as u8))
                .collect();
            let s = CtScheme {
                bits,
                symmetric: false,
                strategy: CtStrategy::Group(32),
            };
            let t = zero_point_tensor(s, &z, rows, bits);
            assert_eq!(t.dtype, CtDtype::I32);
            assert_eq!(t.shape, shape, "bits {bits}");
            assert_eq!(le_words(&t.bytes), want, "bits {bits}");
        }
    }

    #[test]
    fn what_compressed_tensors_cannot_hold_is_named() {
        let int = |s: &str| match WeightFormat::parse(s).unwrap() {
            WeightFormat::Int(f) => f,
            _ => unreachable!(),
        };
        let e = CtScheme::for_format(int("int4-pow2-g128"), 256).unwrap_err();
        assert!(e.contains("power-of-two") && e.contains("qevo-int"), "{e}");
        let e = CtScheme::for_format(int("int4-sym-g128"), 200).unwrap_err();
        assert!(e.contains("200 columns") && e.contains("ragged"), "{e}");
        let s = CtScheme::for_format(int("int4-asym-g128"), 256).unwrap();
        assert_eq!(s.strategy, CtStrategy::Group(128));
        assert!(!s.symmetric);
        let s = CtScheme::for_format(int("int8-sym-channel"), 200).unwrap();
        assert_eq!(s.weights_json()["strategy"], "channel");
        assert!(s.weights_json()["group_size"].is_null());
    }

    #[test]
    fn config_has_one_group_per_scheme_with_exact_targets() {
        let g128 = CtScheme {
            bits: 4,
            symmetric: true,
            strategy: CtStrategy::Group(128),
        };
        let ch = CtScheme {
            bits: 8,
            symmetric: false,
            strategy: CtStrategy::Channel,
        };
        let m = |n: &str, s| CtModule {
            name: n.to_string(),
            scheme: s,
        };
        let qc = quantization_config(&[
            m("model.embed_tokens", None),
            m("model.layers.0.self_attn.q_proj", Some(g128)),
            m("model.layers.0.mlp.down_proj", Some(ch)),
            m("model.layers.1.self_attn.q_proj", Some(g128)),
            m("lm_head", None),
        ]);
        assert_eq!(qc["quant_method"], "compressed-tensors");
        assert_eq!(qc["format"], "pack-quantized");
        assert_eq!(qc["quantization_status"], "compressed");
        let groups = qc["config_groups"].as_object().unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups["group_0"]["targets"],
            serde_json::json!([
                "model.layers.0.self_attn.q_proj",
                "model.layers.1.self_attn.q_proj"
            ])
        );
        assert_eq!(groups["group_0"]["weights"]["num_bits"], 4);
        assert_eq!(groups["group_0"]["weights"]["group_size"], 128);
        assert_eq!(groups["group_0"]["format"], "pack-quantized");
        assert_eq!(groups["group_1"]["weights"]["symmetric"], false);
        assert_eq!(
            qc["ignore"],
            serde_json::json!(["model.embed_tokens", "lm_head"])
        );
    }
}
