//! Host measurement: times this machine's f32 and GGML-quantized matmuls
//! (candle CPU kernels, the ones qevo's evaluator runs) and its memory
//! bandwidth, and turns the numbers into a `Profile` named `host`, written
//! in the same TOML format as the built-ins.
//!
//! Every rate is the best of several repetitions, because a shared machine
//! only ever makes a run slower. Energy is not measurable here and is left 0.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use rayon::prelude::*;

use super::profile::{profile_to_toml, ComputeMode, Constraints, Profile, Workload};
use crate::error::HwError;

/// GGML weight types measured, with the name qevo's formats use and their compute width.
pub const GGML_TYPES: &[(GgmlDType, &str, u8)] = &[
    (GgmlDType::Q8_0, "q8_0", 8),
    (GgmlDType::Q6K, "q6_k", 6),
    (GgmlDType::Q5K, "q5_k", 5),
    (GgmlDType::Q5_0, "q5_0", 5),
    (GgmlDType::Q5_1, "q5_1", 5),
    (GgmlDType::Q4K, "q4_k", 4),
    (GgmlDType::Q4_0, "q4_0", 4),
    (GgmlDType::Q4_1, "q4_1", 4),
    (GgmlDType::Q3K, "q3_k", 3),
    (GgmlDType::Q2K, "q2_k", 2),
    (GgmlDType::F16, "f16", 16),
];

/// Matmul shapes (tokens, in, out) typical of a small transformer: attention
/// and FFN projections at hidden 256 / FFN 768. `in` is a multiple of 256 so
/// every k-quant block fits.
pub const PREFILL_SHAPES: &[(usize, usize, usize)] = &[(256, 256, 768), (256, 768, 256)];
pub const DECODE_SHAPES: &[(usize, usize, usize)] = &[(1, 256, 768), (1, 768, 256)];

#[derive(Debug, Clone, PartialEq)]
pub struct HostOptions {
    /// Repetitions per measurement; the best is kept.
    pub reps: usize,
    /// Calls timed together in one decode-shape repetition (each call is short).
    pub decode_batch: usize,
    /// Buffer size for the bandwidth measurement; must exceed the caches.
    pub bandwidth_bytes: usize,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            reps: 5,
            decode_batch: 20,
            bandwidth_bytes: 256 << 20,
        }
    }
}

/// Rate of one matmul shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeRate {
    pub tokens: usize,
    pub in_features: usize,
    pub out_features: usize,
    pub macs_per_s: f64,
}

/// Rates of one weight type: best prefill-shaped and best decode-shaped.
#[derive(Debug, Clone, PartialEq)]
pub struct MatmulRates {
    /// `f32` or a GGML type name (`q4_k`...).
    pub format: String,
    pub weight_bits: u8,
    pub shapes: Vec<ShapeRate>,
}

impl MatmulRates {
    fn best(&self, decode: bool) -> f64 {
        self.shapes
            .iter()
            .filter(|s| (s.tokens == 1) == decode)
            .map(|s| s.macs_per_s)
            .fold(0.0, f64::max)
    }
    pub fn prefill_macs_per_s(&self) -> f64 {
        self.best(false)
    }
    pub fn decode_macs_per_s(&self) -> f64 {
        self.best(true)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostMeasurement {
    pub threads: usize,
    pub f32: MatmulRates,
    pub quantized: Vec<MatmulRates>,
    /// Large-buffer parallel read (sum), GB/s (10^9 bytes).
    pub read_gb_per_s: f64,
    /// Large-buffer parallel copy, counting bytes read plus written, GB/s.
    pub copy_gb_per_s: f64,
    /// Time of a tiny matmul call: the per-layer dispatch cost.
    pub layer_overhead_us: f64,
    pub memory_capacity_mb: f64,
    pub seconds_spent: f64,
    /// When the measurement started, seconds since 1970-01-01 UTC (for the TOML header).
    pub measured_at_unix_s: u64,
}

/// Best time per call of `f`, in seconds, over `reps` repetitions of `batch` calls.
fn best_secs<F>(reps: usize, batch: usize, mut f: F) -> Result<f64, HwError>
where
    F: FnMut() -> Result<(), HwError>,
{
    f()?; // warm-up: first-touch allocation, thread pool start
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        for _ in 0..batch.max(1) {
            f()?;
        }
        best = best.min(t.elapsed().as_secs_f64() / batch.max(1) as f64);
    }
    Ok(best)
}

fn shape_rates<F>(opts: &HostOptions, mut run: F) -> Result<Vec<ShapeRate>, HwError>
where
    F: FnMut(
        &Tensor,
        usize,
        usize,
    ) -> Result<Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor>>, HwError>,
{
    let dev = Device::Cpu;
    let mut out = Vec::new();
    for (shapes, batch) in [(PREFILL_SHAPES, 1), (DECODE_SHAPES, opts.decode_batch)] {
        for &(t, k, n) in shapes {
            let w = Tensor::randn(0f32, 1f32, (n, k), &dev)?;
            let x = Tensor::randn(0f32, 1f32, (t, k), &dev)?;
            let op = run(&w, k, n)?;
            let secs = best_secs(opts.reps, batch, || {
                op(&x)?;
                Ok(())
            })?;
            out.push(ShapeRate {
                tokens: t,
                in_features: k,
                out_features: n,
                macs_per_s: (t * k * n) as f64 / secs,
            });
        }
    }
    Ok(out)
}

fn measure_f32(opts: &HostOptions) -> Result<MatmulRates, HwError> {
    let shapes = shape_rates(opts, |w, _, _| {
        let wt = w.t()?.contiguous()?;
        Ok(Box::new(move |x: &Tensor| x.matmul(&wt)))
    })?;
    Ok(MatmulRates {
        format: "f32".into(),
        weight_bits: 32,
        shapes,
    })
}

fn measure_ggml(
    opts: &HostOptions,
    dtype: GgmlDType,
    name: &str,
    bits: u8,
) -> Result<MatmulRates, HwError> {
    let shapes = shape_rates(opts, |w, _, _| {
        let q = QMatMul::from_qtensor(QTensor::quantize(w, dtype)?)?;
        Ok(Box::new(move |x: &Tensor| q.forward(x)))
    })?;
    Ok(MatmulRates {
        format: name.into(),
        weight_bits: bits,
        shapes,
    })
}

/// Parallel read and copy bandwidth over a buffer larger than the caches.
fn measure_bandwidth(opts: &HostOptions) -> Result<(f64, f64), HwError> {
    // Integer words: their sum vectorises (a float sum is ordered and would
    // measure the adder, not the memory).
    let n = (opts.bandwidth_bytes / 8).max(1 << 16);
    let src: Vec<u64> = vec![1; n];
    let mut dst: Vec<u64> = vec![0; n];
    let bytes = (n * 8) as f64;
    const CHUNK: usize = 1 << 15;
    let mut sums_ok = true;
    let read = best_secs(opts.reps, 1, || {
        let s = src
            .par_chunks(CHUNK)
            .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
            .reduce(|| 0, u64::wrapping_add);
        sums_ok &= s == n as u64;
        Ok(())
    })?;
    let copy = best_secs(opts.reps, 1, || {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| d.copy_from_slice(s));
        Ok(())
    })?;
    // Keep the sums observable so the reads cannot be optimised away.
    if !sums_ok || dst[n - 1] != 1 {
        return Err(HwError::Measure(
            "bandwidth buffers read back wrong values".into(),
        ));
    }
    Ok((bytes / read / 1e9, 2.0 * bytes / copy / 1e9))
}

fn measure_overhead(opts: &HostOptions) -> Result<f64, HwError> {
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1f32, (16, 16), &dev)?;
    let x = Tensor::randn(0f32, 1f32, (1, 16), &dev)?;
    let secs = best_secs(opts.reps, 100, || {
        x.matmul(&w)?;
        Ok(())
    })?;
    Ok(secs * 1e6)
}

fn memory_capacity_mb() -> Result<f64, HwError> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| HwError::Measure(format!("reading /proc/meminfo: {e}")))?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .ok_or_else(|| HwError::Measure("/proc/meminfo has no MemTotal line".into()))?;
    Ok(kb * 1024.0 / 1e6)
}

/// Measures this machine. With default options it takes a few seconds.
pub fn measure_host(opts: &HostOptions) -> Result<HostMeasurement, HwError> {
    let start = Instant::now();
    let measured_at_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let f32 = measure_f32(opts)?;
    let quantized = GGML_TYPES
        .iter()
        .map(|&(dt, name, bits)| measure_ggml(opts, dt, name, bits))
        .collect::<Result<Vec<_>, _>>()?;
    let (read_gb_per_s, copy_gb_per_s) = measure_bandwidth(opts)?;
    let layer_overhead_us = measure_overhead(opts)?;
    Ok(HostMeasurement {
        threads: candle_core::utils::get_num_threads(),
        f32,
        quantized,
        read_gb_per_s,
        copy_gb_per_s,
        layer_overhead_us,
        memory_capacity_mb: memory_capacity_mb()?,
        seconds_spent: start.elapsed().as_secs_f64(),
        measured_at_unix_s,
    })
}

fn mode(r: &MatmulRates, format: Option<String>) -> ComputeMode {
    ComputeMode {
        weight_bits: r.weight_bits,
        // candle's kernels take f32 activations for every weight type.
        act_bits: 32,
        format,
        peak_macs_per_s: r.prefill_macs_per_s(),
        decode_macs_per_s: Some(r.decode_macs_per_s()),
        energy_pj_per_mac: 0.0,
    }
}

/// The `host` profile built from a measurement.
pub fn host_profile(m: &HostMeasurement) -> Profile {
    let mut compute = vec![mode(&m.f32, None)];
    compute.extend(m.quantized.iter().map(|r| mode(r, Some(r.format.clone()))));
    let mut weight_bits: Vec<u8> = m.quantized.iter().map(|r| r.weight_bits).collect();
    weight_bits.push(32);
    weight_bits.sort_unstable();
    weight_bits.dedup();
    let mut weight_formats: Vec<String> = m.quantized.iter().map(|r| r.format.clone()).collect();
    weight_formats.push("f32".into());
    Profile {
        name: "host".into(),
        description: format!(
            "This machine as measured by qevo (candle CPU, {} threads): f32 {:.1} GMAC/s, {:.1} GB/s read",
            m.threads,
            m.f32.prefill_macs_per_s() / 1e9,
            m.read_gb_per_s
        ),
        mem_bandwidth_gb_per_s: m.read_gb_per_s,
        memory_capacity_mb: m.memory_capacity_mb,
        energy_pj_per_dram_byte: 0.0,
        layer_overhead_us: m.layer_overhead_us,
        // Needs a model to measure; `qevo profile-host` calibrates it.
        block_other_ns_per_token: 0.0,
        float_bits: 32,
        weight_bits,
        weight_formats,
        constraints: Constraints::default(),
        workload: Workload {
            prefill_tokens: 128,
            decode_tokens: 64,
        },
        compute,
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time (proleptic Gregorian calendar).
pub fn utc_timestamp(unix_s: u64) -> String {
    let (year, month, day, secs) = utc_civil(unix_s);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A Unix time as (year, month, day, seconds into the day), UTC, proleptic Gregorian: the one
/// calendar conversion (host profiles' headers and the Optuna journal print it).
pub fn utc_civil(unix_s: u64) -> (i64, i64, i64, u64) {
    let (days, secs) = ((unix_s / 86_400) as i64, unix_s % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm, eras of 400 years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs)
}

/// Comment lines recording where and when the host was measured and every shape's rate.
pub(crate) fn measurement_header(m: &HostMeasurement) -> String {
    let mut head = String::new();
    head.push_str("# Host profile measured by qevo on this machine (candle CPU kernels).\n");
    head.push_str(&format!(
        "# Measured at {}; threads {}, measurement took {:.1} s; best of several repetitions each.\n",
        utc_timestamp(m.measured_at_unix_s),
        m.threads,
        m.seconds_spent
    ));
    head.push_str(&format!(
        "# memory: parallel read {:.2} GB/s (used as mem_bandwidth_gb_per_s), copy {:.2} GB/s (read+write).\n",
        m.read_gb_per_s, m.copy_gb_per_s
    ));
    head.push_str(&format!(
        "# layer_overhead_us: one 1x16x16 f32 matmul call, {:.2} us.\n",
        m.layer_overhead_us
    ));
    head.push_str("# Energy is not measured on the host: energy fields are 0.\n");
    head.push_str("# Matmul rates, GMAC/s (tokens x in x out):\n");
    for r in std::iter::once(&m.f32).chain(m.quantized.iter()) {
        let shapes: Vec<String> = r
            .shapes
            .iter()
            .map(|s| {
                format!(
                    "{}x{}x{} {:.2}",
                    s.tokens,
                    s.in_features,
                    s.out_features,
                    s.macs_per_s / 1e9
                )
            })
            .collect();
        head.push_str(&format!("#   {:<5} {}\n", r.format, shapes.join(", ")));
    }
    head
}

/// The uncalibrated host profile as TOML, headed by comments recording every measured shape.
pub fn host_profile_toml(m: &HostMeasurement) -> Result<String, HwError> {
    Ok(measurement_header(m) + &profile_to_toml(&host_profile(m))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::profile::parse_profile;

    #[test]
    fn host_profile_round_trips_through_its_toml() {
        let opts = HostOptions {
            reps: 1,
            decode_batch: 1,
            bandwidth_bytes: 1 << 20,
        };
        let m = measure_host(&opts).unwrap();
        assert_eq!(m.quantized.len(), GGML_TYPES.len());
        for r in std::iter::once(&m.f32).chain(m.quantized.iter()) {
            assert_eq!(r.shapes.len(), PREFILL_SHAPES.len() + DECODE_SHAPES.len());
            assert!(r.prefill_macs_per_s() > 0.0 && r.decode_macs_per_s() > 0.0);
        }
        let text = host_profile_toml(&m).unwrap();
        assert!(text.starts_with("# Host profile measured"));
        let p = parse_profile(&text, "host.toml").unwrap();
        assert_eq!(p, host_profile(&m));
        assert_eq!(p.name, "host");
        // Every measured GGML type gets its own format mode; f32 is the generic one.
        for (_, name, bits) in GGML_TYPES {
            let mode = crate::hw::select_mode(&p, *bits, 16, Some(name));
            assert_eq!(mode.format.as_deref(), Some(*name));
        }
        assert_eq!(crate::hw::select_mode(&p, 4, 16, None).weight_bits, 32);
    }

    #[test]
    fn utc_timestamp_of_known_instants() {
        assert_eq!(utc_timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_timestamp(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }
}
