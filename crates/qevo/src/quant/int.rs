//! Generic integer weight formats `int{2..8}-{sym|asym|pow2}-{tensor|channel|gN}`: the
//! per-group parameters, the exact packed layout, and fast quantize / dequantize kernels.
//!
//! Groups are contiguous runs of the row-major `[rows, cols]` data: the whole tensor
//! (`tensor`), one row = one output channel (`channel`), or `g` consecutive columns of a
//! row (`g32`/`g64`/`g128`). Groups never cross a row: when `g` does not divide `cols`,
//! each row ends with a *ragged* group of the remaining `cols % g` columns, whose scale
//! and zero point come from those values only. A row then has `⌈cols/g⌉` groups, and the
//! tensor `G = rows·⌈cols/g⌉`, numbered row-major (row 0's groups, then row 1's, ...).
//!
//! Packed layout of one tensor with `G` groups and `N = rows·cols` codes of `b` bits,
//! sections back to back with no header or padding between them except where stated:
//!
//! | section | present for | content |
//! | --- | --- | --- |
//! | scales | sym, asym | `G` × f16 little-endian, group order |
//! | exponents | pow2 | `G` × i8: the group's scale is `2^e` |
//! | zero points | asym | `G` codes of `b` bits, bit-packed like the codes, padded to a whole byte |
//! | codes | all | `N` codes of `b` bits: code `i` occupies bits `i·b .. i·b+b` of the stream, stream bit `k` is bit `k % 8` of byte `k / 8` (little-endian), padded to a whole byte |
//!
//! so a tensor takes exactly `G·s + ⌈G·b/8⌉·[asym] + ⌈N·b/8⌉` bytes, `s` = 2 (f16) or 1
//! (i8 exponent).
//!
//! Value rules (`qmax = 2^(b-1) − 1`, `n = 2^b − 1`):
//! * sym: `scale = amax / qmax` rounded *up* to the next f16 (so no value clips),
//!   `q = clamp(round(x / scale), −qmax, qmax)`, stored as `u = q + 2^(b-1)`; `x̂ = scale·q`.
//! * asym: the range `[min(lo, 0), max(hi, 0)]` (zero stays exactly representable),
//!   `scale = range / n` rounded up to f16, zero point `z = clamp(round(−lo / scale), 0, n)`,
//!   `u = clamp(round(x / scale) + z, 0, n)`; `x̂ = scale·(u − z)`.
//! * pow2: like sym, but the scale is `2^e` with `e` the *smallest* integer such that
//!   `amax ≤ qmax·2^e` (the ideal scale rounded up to a power of two), clamped to
//!   `[−127, 127]` (so `2^−e` is a finite f32 too); dequantization is an exponent shift,
//!   `x̂ = q·2^e`.
//! * `round` is round-half-to-even (IEEE default), computed as `(v + 1.5·2^23) − 1.5·2^23`,
//!   exact for the `|v| ≤ 2^9` that occur here.
//!
//! An all-zero group gets scale 0 (pow2: `e = −127`) and decodes to zeros.

use half::f16;
use rayon::prelude::*;

/// How the scale (and zero point) of a group is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Scale only, codes symmetric around zero.
    Sym,
    /// Scale and integer zero point.
    Asym,
    /// Scale restricted to a power of two (dequantization is a shift).
    Pow2,
}

/// Which elements share one scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    Tensor,
    Channel,
    /// `g` consecutive columns of one row; `g` ∈ {32, 64, 128}.
    Group(u32),
}

/// A generic integer weight format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntFormat {
    /// Code width, 2..=8.
    pub bits: u8,
    pub scheme: Scheme,
    pub granularity: Granularity,
}

/// Schemes with their names, in the order formats are listed.
pub(crate) const SCHEMES: [(Scheme, &str); 3] = [
    (Scheme::Sym, "sym"),
    (Scheme::Asym, "asym"),
    (Scheme::Pow2, "pow2"),
];
impl Scheme {
    /// The scheme's name in format names and files (`SCHEMES`).
    pub fn name(self) -> &'static str {
        SCHEMES.iter().find(|r| r.0 == self).map_or("?", |r| r.1)
    }
}

/// Granularity kinds with their names (a group's size is written after `g`).
pub(crate) const GRANULARITY_KINDS: [&str; 3] = ["tensor", "channel", "group"];

impl Granularity {
    /// `tensor`, `channel` or `group` (`GRANULARITY_KINDS`).
    pub fn kind(self) -> &'static str {
        match self {
            Granularity::Tensor => GRANULARITY_KINDS[0],
            Granularity::Channel => GRANULARITY_KINDS[1],
            Granularity::Group(_) => GRANULARITY_KINDS[2],
        }
    }

    /// The name inside a format name: `tensor`, `channel` or `g<size>`.
    pub fn format_part(self) -> String {
        match self {
            Granularity::Group(g) => format!("g{g}"),
            other => other.kind().to_string(),
        }
    }
}

/// Group sizes the search may choose.
pub(crate) const GROUP_SIZES: [u32; 3] = [32, 64, 128];
pub(crate) const BITS: std::ops::RangeInclusive<u8> = 2..=8;

/// Per-group decoded parameters: `x̂ = scale · (u − zero)`.
#[derive(Debug, Clone, Copy)]
struct GroupParams {
    scale: f32,
    inv: f32,
    zero: f32,
    /// Stored scale bits: f16 bits (sym/asym) or the exponent as i8 (pow2).
    stored: u16,
    zero_code: u8,
}

/// Why a group cannot be represented (only possible for values near f32's range).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ScaleOverflow {
    pub amax: f32,
}

const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23

#[inline(always)]
fn round_even(v: f32) -> f32 {
    (v + MAGIC) - MAGIC
}

/// Smallest f16 ≥ `v` (v ≥ 0 and finite); `None` when it exceeds f16's range.
fn f16_round_up(v: f32) -> Option<f16> {
    let h = f16::from_f32(v);
    if !h.is_finite() {
        return None;
    }
    if h.to_f32() >= v {
        Some(h)
    } else {
        let up = f16::from_bits(h.to_bits() + 1);
        up.is_finite().then_some(up)
    }
}

/// 2^e as f32 for e in [−149, 127].
pub(crate) fn pow2(e: i32) -> f32 {
    if e >= -126 {
        f32::from_bits(((e + 127) as u32) << 23)
    } else {
        f32::from_bits(1u32 << (e + 149))
    }
}

/// ⌈log2 v⌉ for finite v > 0, exact (from the bit pattern).
fn ceil_log2(v: f32) -> i32 {
    let bits = v.to_bits();
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x7f_ffff;
    if exp == 0 {
        // Subnormal: v = mant · 2^-149.
        let fl = 31 - mant.leading_zeros() as i32 - 149;
        if mant.is_power_of_two() {
            fl
        } else {
            fl + 1
        }
    } else if mant == 0 {
        exp - 127
    } else {
        exp - 126
    }
}

impl IntFormat {
    pub fn qmax(self) -> i32 {
        (1 << (self.bits - 1)) - 1
    }
    fn levels(self) -> i32 {
        (1 << self.bits) - 1
    }
    /// Offset added to signed codes to store them unsigned (sym, pow2).
    fn bias(self) -> i32 {
        1 << (self.bits - 1)
    }

    /// Elements per (full) group in a `[rows, cols]` tensor; a row's last group may be
    /// shorter (`cols % g` elements) when `g` does not divide `cols`.
    pub fn group_len(self, rows: usize, cols: usize) -> usize {
        match self.granularity {
            Granularity::Tensor => rows * cols,
            Granularity::Channel => cols,
            Granularity::Group(g) => g as usize,
        }
    }

    /// (elements per grouping row, elements per full group): groups tile each grouping
    /// row, the last one ragged. `tensor` granularity is one row of all elements.
    fn tiling(self, rows: usize, cols: usize) -> (usize, usize) {
        match self.granularity {
            Granularity::Tensor => (rows * cols, rows * cols),
            _ => (cols, self.group_len(rows, cols)),
        }
    }

    /// Number of groups (scales) of a `[rows, cols]` tensor, ragged last groups included.
    pub fn group_count(self, rows: usize, cols: usize) -> usize {
        let (row_len, g) = self.tiling(rows, cols);
        if row_len == 0 {
            return 0;
        }
        (rows * cols / row_len) * row_len.div_ceil(g)
    }

    /// Every non-empty shape: a group size that does not divide the row gives each row a
    /// ragged last group.
    pub fn applies_to(self, rows: usize, cols: usize) -> bool {
        rows > 0 && cols > 0
    }

    fn scale_bytes(self) -> usize {
        match self.scheme {
            Scheme::Pow2 => 1,
            _ => 2,
        }
    }

    /// Byte sizes of the (scales, zero points, codes) sections.
    pub(crate) fn sections(self, rows: usize, cols: usize) -> (usize, usize, usize) {
        let n = rows * cols;
        let g = self.group_count(rows, cols);
        let b = self.bits as usize;
        let zp = match self.scheme {
            Scheme::Asym => (g * b).div_ceil(8),
            _ => 0,
        };
        (g * self.scale_bytes(), zp, (n * b).div_ceil(8))
    }

    /// Exact bytes of a packed `[rows, cols]` tensor; `None` if the format does not apply.
    pub fn tensor_bytes(self, rows: usize, cols: usize) -> Option<u64> {
        if !self.applies_to(rows, cols) {
            return None;
        }
        let (s, z, c) = self.sections(rows, cols);
        Some((s + z + c) as u64)
    }

    /// Bits per weight of one row of `cols` weights: codes plus the row's share of scales
    /// and zero points, its ragged last group included (for `tensor` granularity the single
    /// scale is not counted here; the exact figure for a whole tensor is `tensor_bytes`).
    pub fn bits_per_weight(self, cols: usize) -> f64 {
        let per_group = (self.scale_bytes() * 8) as f64
            + if self.scheme == Scheme::Asym {
                self.bits as f64
            } else {
                0.0
            };
        let b = self.bits as f64;
        match self.granularity {
            Granularity::Tensor => b,
            Granularity::Channel => b + per_group / cols.max(1) as f64,
            Granularity::Group(g) => {
                let cols = cols.max(1);
                b + per_group * cols.div_ceil(g as usize) as f64 / cols as f64
            }
        }
    }

    fn params(self, lo: f32, hi: f32) -> Result<GroupParams, ScaleOverflow> {
        let amax = lo.abs().max(hi.abs());
        match self.scheme {
            Scheme::Sym => {
                let s = f16_round_up(amax / self.qmax() as f32).ok_or(ScaleOverflow { amax })?;
                let scale = s.to_f32();
                Ok(GroupParams {
                    scale,
                    inv: if scale > 0.0 { 1.0 / scale } else { 0.0 },
                    zero: self.bias() as f32,
                    stored: s.to_bits(),
                    zero_code: 0,
                })
            }
            Scheme::Asym => {
                let lo = lo.min(0.0);
                let hi = hi.max(0.0);
                let range = hi - lo;
                if !range.is_finite() {
                    return Err(ScaleOverflow { amax });
                }
                let s = f16_round_up(range / self.levels() as f32).ok_or(ScaleOverflow { amax })?;
                let scale = s.to_f32();
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                let z = round_even(-lo * inv).clamp(0.0, self.levels() as f32);
                Ok(GroupParams {
                    scale,
                    inv,
                    zero: z,
                    stored: s.to_bits(),
                    zero_code: z as u8,
                })
            }
            Scheme::Pow2 => {
                let e = if amax > 0.0 {
                    let t = amax / self.qmax() as f32;
                    let mut e = ceil_log2(t).max(-127);
                    // The division may have rounded down: make sure amax fits.
                    while e < 127 && amax > self.qmax() as f32 * pow2(e) {
                        e += 1;
                    }
                    if e > 127 || amax > self.qmax() as f32 * pow2(e) {
                        return Err(ScaleOverflow { amax });
                    }
                    e
                } else {
                    -127
                };
                let scale = pow2(e);
                Ok(GroupParams {
                    scale,
                    inv: if amax > 0.0 { 1.0 / scale } else { 0.0 },
                    zero: self.bias() as f32,
                    stored: (e as i8) as u8 as u16,
                    zero_code: 0,
                })
            }
        }
    }

    fn decode_params(self, stored: u16, zero_code: u8) -> GroupParams {
        match self.scheme {
            Scheme::Sym | Scheme::Asym => {
                let scale = f16::from_bits(stored).to_f32();
                GroupParams {
                    scale,
                    inv: 0.0,
                    zero: if self.scheme == Scheme::Sym {
                        self.bias() as f32
                    } else {
                        zero_code as f32
                    },
                    stored,
                    zero_code,
                }
            }
            Scheme::Pow2 => GroupParams {
                scale: pow2((stored as u8 as i8) as i32),
                inv: 0.0,
                zero: self.bias() as f32,
                stored,
                zero_code: 0,
            },
        }
    }

    /// Unsigned code range [lo, hi] of a group with zero point `zero`.
    fn code_range(self) -> (f32, f32) {
        match self.scheme {
            Scheme::Asym => (0.0, self.levels() as f32),
            _ => (
                (self.bias() - self.qmax()) as f32,
                (self.bias() + self.qmax()) as f32,
            ),
        }
    }

    /// Per-group (lo, hi) of the data, in group order: each run of `row_len` values is cut
    /// into groups of `glen`, the last one holding what remains.
    fn group_ranges(data: &[f32], row_len: usize, glen: usize) -> Vec<(f32, f32)> {
        let minmax = |c: &[f32]| {
            c.iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| {
                    (l.min(x), h.max(x))
                })
        };
        if data.len() == row_len && row_len == glen {
            // One group: reduce in parallel.
            let r = data.par_chunks(1 << 15).map(minmax).reduce(
                || (f32::INFINITY, f32::NEG_INFINITY),
                |a, b| (a.0.min(b.0), a.1.max(b.1)),
            );
            return vec![r];
        }
        data.par_chunks(row_len)
            .flat_map_iter(|r| r.chunks(glen).map(minmax))
            .collect()
    }

    fn all_params(
        self,
        data: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<Vec<GroupParams>, ScaleOverflow> {
        let (row_len, glen) = self.tiling(rows, cols);
        Self::group_ranges(data, row_len, glen)
            .into_iter()
            .map(|(lo, hi)| self.params(lo, hi))
            .collect()
    }

    /// Quantize then dequantize, without packing: the exact values `unpack(pack(x))` gives.
    pub(crate) fn fake_quant(
        self,
        data: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<Vec<f32>, ScaleOverflow> {
        let params = self.all_params(data, rows, cols)?;
        let groups = GroupWalk::new(self, rows, cols);
        let (clo, chi) = self.code_range();
        let mut out = vec![0f32; data.len()];
        let chunk_groups = (1usize << 14).div_ceil(groups.glen).max(1);
        let elem_chunk = (chunk_groups * groups.glen).clamp(1, 1 << 16);
        out.par_chunks_mut(elem_chunk)
            .zip(data.par_chunks(elem_chunk))
            .enumerate()
            .for_each(|(ci, (o, d))| {
                groups.walk(ci * elem_chunk, d.len(), |gi, r| {
                    let p = params[gi];
                    for (y, &x) in o[r.clone()].iter_mut().zip(&d[r]) {
                        let u = (round_even(x * p.inv) + p.zero).clamp(clo, chi);
                        *y = (u - p.zero) * p.scale;
                    }
                });
            });
        Ok(out)
    }

    /// Quantizes to the packed layout described in the module docs.
    pub(crate) fn pack(
        self,
        data: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<Vec<u8>, ScaleOverflow> {
        let params = self.all_params(data, rows, cols)?;
        let groups = GroupWalk::new(self, rows, cols);
        let (sb, zb, cb) = self.sections(rows, cols);
        let mut out = vec![0u8; sb + zb + cb];
        let (scales, rest) = out.split_at_mut(sb);
        let (zeros, codes) = rest.split_at_mut(zb);
        match self.scheme {
            Scheme::Pow2 => {
                for (o, p) in scales.iter_mut().zip(&params) {
                    *o = p.stored as u8;
                }
            }
            _ => {
                for (o, p) in scales.chunks_exact_mut(2).zip(&params) {
                    o.copy_from_slice(&p.stored.to_le_bytes());
                }
            }
        }
        if self.scheme == Scheme::Asym {
            let z: Vec<u8> = params.iter().map(|p| p.zero_code).collect();
            pack_bits(&z, self.bits, zeros);
        }
        let (clo, chi) = self.code_range();
        let b = self.bits as usize;
        // Chunks of a multiple of 8 codes start on a byte boundary.
        let elem_chunk = 1usize << 15;
        codes
            .par_chunks_mut(elem_chunk * b / 8)
            .zip(data.par_chunks(elem_chunk))
            .enumerate()
            .for_each(|(ci, (o, d))| {
                let mut u8s = vec![0u8; d.len()];
                groups.walk(ci * elem_chunk, d.len(), |gi, r| {
                    let p = params[gi];
                    for (y, &x) in u8s[r.clone()].iter_mut().zip(&d[r]) {
                        *y = (round_even(x * p.inv) + p.zero).clamp(clo, chi) as u8;
                    }
                });
                pack_bits(&u8s, self.bits, o);
            });
        Ok(out)
    }

    /// Decodes the packed layout; the caller has checked `bytes.len()`.
    pub(crate) fn unpack(self, bytes: &[u8], rows: usize, cols: usize) -> Vec<f32> {
        let groups = GroupWalk::new(self, rows, cols);
        let n = rows * cols;
        let g = self.group_count(rows, cols);
        let (sb, zb, _) = self.sections(rows, cols);
        let scales = &bytes[..sb];
        let zeros = &bytes[sb..sb + zb];
        let codes = &bytes[sb + zb..];
        let mut zcodes = vec![0u8; g];
        if self.scheme == Scheme::Asym {
            unpack_bits(zeros, self.bits, &mut zcodes);
        }
        let params: Vec<GroupParams> = (0..g)
            .map(|i| {
                let stored = match self.scheme {
                    Scheme::Pow2 => scales[i] as u16,
                    _ => u16::from_le_bytes([scales[2 * i], scales[2 * i + 1]]),
                };
                self.decode_params(stored, zcodes[i])
            })
            .collect();
        let b = self.bits as usize;
        let elem_chunk = 1usize << 15;
        let mut out = vec![0f32; n];
        out.par_chunks_mut(elem_chunk)
            .zip(codes.par_chunks(elem_chunk * b / 8))
            .enumerate()
            .for_each(|(ci, (o, c))| {
                let mut u8s = vec![0u8; o.len()];
                unpack_bits(c, self.bits, &mut u8s);
                let len = o.len();
                groups.walk(ci * elem_chunk, len, |gi, r| {
                    let p = params[gi];
                    for (y, &u) in o[r.clone()].iter_mut().zip(&u8s[r]) {
                        *y = (u as f32 - p.zero) * p.scale;
                    }
                });
            });
        out
    }
}

/// Walks a chunk of the flat data group by group (ragged last groups included).
#[derive(Debug, Clone, Copy)]
struct GroupWalk {
    row_len: usize,
    glen: usize,
    per_row: usize,
}

impl GroupWalk {
    fn new(f: IntFormat, rows: usize, cols: usize) -> GroupWalk {
        let (row_len, glen) = f.tiling(rows, cols);
        GroupWalk {
            row_len: row_len.max(1),
            glen: glen.max(1),
            per_row: row_len.max(1).div_ceil(glen.max(1)),
        }
    }

    /// Calls `f(group index, local range)` for each group piece of the `len` elements
    /// that start at flat position `first`, in order.
    fn walk(&self, first: usize, len: usize, mut f: impl FnMut(usize, std::ops::Range<usize>)) {
        let mut pos = 0;
        while pos < len {
            let p = first + pos;
            let (row, col) = (p / self.row_len, p % self.row_len);
            let gi = row * self.per_row + col / self.glen;
            let group_end = ((col / self.glen + 1) * self.glen).min(self.row_len);
            let end = (pos + group_end - col).min(len);
            f(gi, pos..end);
            pos = end;
        }
    }
}

/// Bit-packs `codes` (each < 2^bits) little-endian into `out` (length ⌈n·bits/8⌉).
pub(crate) fn pack_bits(codes: &[u8], bits: u8, out: &mut [u8]) {
    match bits {
        8 => out[..codes.len()].copy_from_slice(codes),
        4 => {
            for (o, c) in out.iter_mut().zip(codes.chunks(2)) {
                *o = c[0] | (c.get(1).copied().unwrap_or(0) << 4);
            }
        }
        2 => {
            for (o, c) in out.iter_mut().zip(codes.chunks(4)) {
                *o = c
                    .iter()
                    .enumerate()
                    .fold(0u8, |a, (i, &v)| a | (v << (2 * i)));
            }
        }
        _ => {
            let b = bits as u32;
            let mut acc: u64 = 0;
            let mut n: u32 = 0;
            let mut w = 0;
            for &c in codes {
                acc |= (c as u64) << n;
                n += b;
                while n >= 8 {
                    out[w] = acc as u8;
                    w += 1;
                    acc >>= 8;
                    n -= 8;
                }
            }
            if n > 0 {
                out[w] = acc as u8;
            }
        }
    }
}

/// Inverse of `pack_bits`: fills `codes` from the little-endian bit stream `bytes`.
pub(crate) fn unpack_bits(bytes: &[u8], bits: u8, codes: &mut [u8]) {
    match bits {
        8 => codes.copy_from_slice(&bytes[..codes.len()]),
        4 => {
            for (c, &o) in codes.chunks_mut(2).zip(bytes) {
                c[0] = o & 15;
                if let Some(h) = c.get_mut(1) {
                    *h = o >> 4;
                }
            }
        }
        2 => {
            for (c, &o) in codes.chunks_mut(4).zip(bytes) {
                for (i, v) in c.iter_mut().enumerate() {
                    *v = (o >> (2 * i)) & 3;
                }
            }
        }
        _ => {
            let b = bits as u32;
            let mask = (1u64 << b) - 1;
            let mut acc: u64 = 0;
            let mut n: u32 = 0;
            let mut r = 0;
            for c in codes.iter_mut() {
                while n < b {
                    acc |= (bytes[r] as u64) << n;
                    r += 1;
                    n += 8;
                }
                *c = (acc & mask) as u8;
                acc >>= b;
                n -= b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_packing_round_trips_every_width() {
        for bits in BITS {
            let codes: Vec<u8> = (0..101u32)
                .map(|i| ((i * 37 + 5) % (1 << bits)) as u8)
                .collect();
            let mut packed = vec![0u8; (codes.len() * bits as usize).div_ceil(8)];
            pack_bits(&codes, bits, &mut packed);
            let mut back = vec![0u8; codes.len()];
            unpack_bits(&packed, bits, &mut back);
            assert_eq!(back, codes, "bits {bits}");
        }
    }

    #[test]
    fn packing_is_little_endian_within_bytes() {
        let mut out = [0u8; 2];
        pack_bits(&[1, 2, 3, 4, 5], 3, &mut out);
        // 1 | 2<<3 | 3<<6 | 4<<9 | 5<<12 = 0b101_100_011_010_001
        assert_eq!(
            u16::from_le_bytes(out),
            1 | (2 << 3) | (3 << 6) | (4 << 9) | (5 << 12)
        );
    }

    #[test]
    fn ceil_log2_is_exact_for_normals_and_subnormals() {
        for (v, e) in [
            (1.0f32, 0),
            (1.5, 1),
            (0.5, -1),
            (0.75, 0),
            (3.0e38, 128),
            (f32::from_bits(1), -149),
            (f32::from_bits(3), -147),
        ] {
            assert_eq!(ceil_log2(v), e, "{v}");
        }
    }

    #[test]
    fn pow2_scale_is_smallest_power_covering_amax() {
        let f = IntFormat {
            bits: 4,
            scheme: Scheme::Pow2,
            granularity: Granularity::Tensor,
        };
        let p = f.params(-7.0, 1.0).unwrap();
        assert_eq!(p.scale, 1.0);
        let p = f.params(-7.01, 1.0).unwrap();
        assert_eq!(p.scale, 2.0);
    }

    #[test]
    fn sym_scale_rounds_up_so_nothing_clips() {
        let f = IntFormat {
            bits: 8,
            scheme: Scheme::Sym,
            granularity: Granularity::Tensor,
        };
        for amax in [0.1f32, 0.3, 1.7, 1234.5] {
            let p = f.params(-amax, amax).unwrap();
            assert!(p.scale * f.qmax() as f32 >= amax);
        }
    }
}
