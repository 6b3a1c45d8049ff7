//! `Settings`: everything a user tells a search, as one serde record with the library's
//! defaults. Both front ends fill this one type: the CLI through clap (feature `clap`;
//! each field is a flag, `_` spelled `-`), the Python package by deserialising
//! `qevo.search`'s keyword arguments (`from_json`; each field is a keyword). So an option
//! exists in both or in neither, and a setting error names the field, which is the
//! keyword and, spelled with dashes, the flag.
//!
//! `resolve` turns the settings into a validated `SearchConfig` for one model (an encoder
//! gets its own default formats and workload); `split_texts` makes the calibration and
//! held-out texts.

use super::config::{
    defaults, parse_epsilon, BaselineConfig, CacheConfig, CrossoverChoice, DataConfig,
    EvolutionConfig, FitnessWeights, Importance, SearchConfig, SpaceConfig, TuneFrontConfig,
};
use super::sensitivity::SensitivityMode;
use super::space::{parse_act_bits, parse_formats, UnitMode};
use crate::error::{Error, Result};
use crate::eval::HeadScore;
use crate::hw::{parse_constraint_override, resolve_profile, Workload};
use crate::model::Model;
use crate::plan::UserLimits;
use crate::quant::RoundingMode;
use std::path::PathBuf;
use std::time::Duration;

/// What a search can be told; a field left out takes its default. Field docs are the
/// CLI's help.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Built-in target (arm-neon, hexagon, apple-ane, jetson-orin) or a profile TOML file.
    #[cfg_attr(feature = "clap", arg(long, default_value = defaults::TARGET))]
    pub target: String,
    /// Override a target constraint, e.g. max_memory_mb=100 or max_latency_ms=none.
    #[cfg_attr(feature = "clap", arg(long = "constraint", value_name = "KEY=VALUE"))]
    pub constraints: Vec<String>,
    /// Workload: prompt tokens [default: the target's; an encoder's window].
    #[cfg_attr(feature = "clap", arg(long))]
    pub prefill_tokens: Option<u64>,
    /// Workload: generated tokens [default: the target's; none for an encoder].
    #[cfg_attr(feature = "clap", arg(long))]
    pub decode_tokens: Option<u64>,
    /// Tensor data limit in MB (10^6 bytes).
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_size_mb: Option<f64>,
    /// Latency limit in ms for the workload on the target.
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_latency_ms: Option<f64>,
    /// Energy limit in mJ for the workload on the target.
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_energy_mj: Option<f64>,
    /// Quality limit: mean KL to FP in nats/token.
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_kl: Option<f64>,
    /// One gene per tensor role, per block, or per tensor.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = UnitMode::Role))]
    pub unit: UnitMode,
    /// Tie attn_q/attn_k/attn_v into one gene (runtimes fuse them).
    #[cfg_attr(feature = "clap", arg(long))]
    pub tie_qkv: bool,
    /// Tie q/k/v and gate/up into one gene each, as vLLM fuses them (it refuses different
    /// schemes inside qkv_proj or gate_up_proj of a compressed-tensors model).
    #[cfg_attr(feature = "clap", arg(long))]
    pub tie_fused: bool,
    /// Allowed weight formats: presets `ggml`, `int`, and/or names (q4_k, int4-asym-g128, ...)
    /// [default: ggml; int for an encoder, which exports to packed safetensors].
    #[cfg_attr(feature = "clap", arg(long))]
    pub formats: Option<String>,
    /// Allowed activation widths (4, 8, 16 = float); `16` alone is a weights-only
    /// runtime (llama.cpp): no activation choice is scored or chosen.
    #[cfg_attr(feature = "clap", arg(long, default_value = defaults::ACT_BITS))]
    pub act_bits: String,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::GENERATIONS))]
    pub generations: u64,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::POPULATION))]
    pub population: usize,
    /// One seed drives all randomness: the same seed gives the same front.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::SEED))]
    pub seed: u64,
    /// Wall-time limit, e.g. 90s, 10m, 1h (a bare number is seconds).
    #[cfg_attr(feature = "clap", arg(long))]
    pub time_budget: Option<String>,
    /// Weights of accuracy, compression, latency, energy in the recommendation fitness.
    #[cfg_attr(feature = "clap", arg(long, default_value = defaults::WEIGHTS))]
    pub weights: String,
    /// The fitness, prefix and multi-fidelity caches and the surrogate (`--no-cache`: all
    /// off, the baseline for their speed-up).
    #[cfg_attr(feature = "clap", arg(long = "no-cache", action = clap::ArgAction::SetFalse))]
    pub cache: bool,
    /// Memory budget (6G, 1500M, 2GiB): the dequantized-weight cache gets what the model,
    /// references and prefix cache leave; a search that cannot fit is refused before it
    /// loads [default: those plus a 2 GiB cache, at most the available memory].
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_memory: Option<String>,
    /// The surrogate screen (`--no-surrogate`: offspring are all scored on the screening
    /// windows).
    #[cfg_attr(feature = "clap", arg(long = "no-surrogate", action = clap::ArgAction::SetFalse))]
    pub surrogate: bool,
    /// How parents exchange genes: auto (one-point for tensor and block units, so
    /// children share a parent's early blocks; uniform for role units), uniform,
    /// one-point, two-point.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = CrossoverChoice::Auto))]
    pub crossover: CrossoverChoice,
    /// Screening tolerance: skip scoring an offspring when an archive plan is within a
    /// factor 1 + epsilon of it in every objective (one value, or KL,bytes,ms,mJ).
    /// 0 skips only plans the archive dominates.
    #[cfg_attr(feature = "clap", arg(long, default_value = "0"))]
    pub epsilon: String,
    /// The Lagrangian baseline and the matched-size table (`--no-baselines`: skipped,
    /// the table too unless random search runs).
    #[cfg_attr(feature = "clap", arg(long = "no-baselines", action = clap::ArgAction::SetFalse))]
    pub baselines: bool,
    /// Also run random search with the evolution's evaluation budget (doubles run time).
    #[cfg_attr(feature = "clap", arg(long))]
    pub random_search: bool,
    /// Tokens per window.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::SEQ_LEN))]
    pub seq_len: usize,
    /// Calibration windows for full evaluations.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::CALIB_WINDOWS))]
    pub calib_windows: usize,
    /// Calibration windows for screening (multi-fidelity).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::SCREEN_WINDOWS))]
    pub screen_windows: usize,
    /// Held-out windows for the overfitting check.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::HELDOUT_WINDOWS))]
    pub heldout_windows: usize,
    /// Validation windows: calibration text after the calibration windows, never fitted
    /// on; the recommended plan and the refine stage's moves are chosen on them (0: on
    /// the calibration windows).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::VALIDATION_WINDOWS))]
    pub validation_windows: usize,
    /// The refine stage: at a size limit, a greedy local search from the best plans
    /// that spends the remaining bytes and swaps tensors, on measured KL (`--no-refine`:
    /// skipped; the evolution then gets the whole time budget).
    #[cfg_attr(feature = "clap", arg(long = "no-refine", action = clap::ArgAction::SetFalse))]
    pub refine: bool,
    /// Score GGML types quantized with an importance matrix collected on the calibration
    /// windows (saved with the outputs as imatrix.gguf, for exports of these plans).
    #[cfg_attr(feature = "clap", arg(long, conflicts_with = "imatrix_file"))]
    pub imatrix: bool,
    /// Score with this importance matrix (llama-imatrix's imatrix.gguf / .dat, or qevo's);
    /// saved with the outputs as imatrix.gguf.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub imatrix_file: Option<PathBuf>,
    /// How GGML block types round while scoring: `block` (llama.cpp's) or `output` (qevo's
    /// output-error rounding on the calibration windows; plan files record its tokens so
    /// an export writes the scored bytes).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = RoundingMode::Block))]
    pub rounding: RoundingMode,
    /// How the per-unit sensitivity table is filled: `measured` (one forward per unit and
    /// choice), `scaled` (two measured probes per unit, the other weight-only choices
    /// scaled by their importance-weighted weight error), or `auto` (scaled when the
    /// measured table would be large: a 135M model with tensor units).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = SensitivityMode::Auto))]
    pub sensitivity: SensitivityMode,
    /// How the calibration scores run the output layer: `full` (every vocabulary row),
    /// `sampled` (per position the FP top-k, the next 192 ranked tokens and the next
    /// token; the mass beyond them estimated by ratio: `eval::head`), or `auto` (sampled
    /// when the output layer has more weights than all blocks, as Gemma-3-270M's).
    /// Validation and held-out scores always run the full head.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = HeadScore::Auto))]
    pub head: HeadScore,
    /// The file the search checkpoints to after every generation [CLI default:
    /// checkpoint.json in the output directory].
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint.
    #[cfg_attr(feature = "clap", arg(long))]
    pub resume: bool,
    /// After the search, tune the K front plans nearest the recommended size (block
    /// scales and norms distilled toward the FP model) and re-score them on the held-out
    /// windows; the tuned GGUFs are saved with the outputs under tuned/.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0, value_name = "K"))]
    pub tune_front: usize,
    /// Training steps per tuned front plan.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::TUNE_STEPS))]
    pub tune_steps: usize,
    /// Train the tuned front plans' integer sub-scales too.
    #[cfg_attr(feature = "clap", arg(long))]
    pub tune_sub_scales: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            target: defaults::TARGET.into(),
            constraints: Vec::new(),
            prefill_tokens: None,
            decode_tokens: None,
            max_size_mb: None,
            max_latency_ms: None,
            max_energy_mj: None,
            max_kl: None,
            unit: UnitMode::Role,
            tie_qkv: false,
            tie_fused: false,
            formats: None,
            act_bits: defaults::ACT_BITS.into(),
            generations: defaults::GENERATIONS,
            population: defaults::POPULATION,
            seed: defaults::SEED,
            time_budget: None,
            weights: defaults::WEIGHTS.into(),
            cache: true,
            max_memory: None,
            surrogate: true,
            crossover: CrossoverChoice::Auto,
            epsilon: "0".into(),
            baselines: true,
            random_search: false,
            seq_len: defaults::SEQ_LEN,
            calib_windows: defaults::CALIB_WINDOWS,
            screen_windows: defaults::SCREEN_WINDOWS,
            heldout_windows: defaults::HELDOUT_WINDOWS,
            validation_windows: defaults::VALIDATION_WINDOWS,
            refine: true,
            imatrix: false,
            imatrix_file: None,
            rounding: RoundingMode::Block,
            sensitivity: SensitivityMode::Auto,
            head: HeadScore::Auto,
            checkpoint: None,
            resume: false,
            tune_front: 0,
            tune_steps: defaults::TUNE_STEPS,
            tune_sub_scales: false,
        }
    }
}

impl Settings {
    /// The names of every setting, in declaration order (the keys of its JSON form).
    pub fn names() -> Vec<String> {
        match serde_json::to_value(Settings::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Settings from a JSON object of keyword arguments. An unknown keyword, or a value
    /// of the wrong type, is an `Error::Setting` naming that keyword.
    pub fn from_json(json: &str) -> Result<Settings> {
        let bad = |field: &str, e: serde_json::Error| Error::setting(field, strip_position(&e));
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad("settings", e))?;
        let serde_json::Value::Object(map) = &value else {
            return Err(Error::setting("settings", "expected an object of settings"));
        };
        serde_json::from_value(value.clone()).map_err(|whole| {
            // serde names no field on a bad value; find it by reading each key alone.
            map.iter()
                .find_map(|(k, v)| {
                    let one = serde_json::Map::from_iter([(k.clone(), v.clone())]);
                    serde_json::from_value::<Settings>(one.into())
                        .err()
                        .map(|e| bad(k, e))
                })
                .unwrap_or_else(|| bad("settings", whole))
        })
    }

    /// The validated search config for `model`. An encoder generates nothing: it embeds
    /// one window per pass (its workload), and its default formats are the integer ones
    /// its export holds.
    pub fn resolve(&self, model: &Model) -> Result<SearchConfig> {
        self.resolve_for(model.arch.is_decoder())
    }

    /// `resolve` for a decoder or an encoder, from the model's headers alone (the memory
    /// a search needs is settled before its weights are loaded).
    pub fn resolve_for(&self, decoder: bool) -> Result<SearchConfig> {
        let cfg = self.build(decoder)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn build(&self, decoder: bool) -> Result<SearchConfig> {
        let overrides = self
            .constraints
            .iter()
            .map(|c| parse_constraint_override(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let target = resolve_profile(&self.target)?.with_overrides(&overrides)?;
        let mut cfg = SearchConfig::for_target(target)?;
        let workload = match decoder {
            true => cfg.workload,
            false => Workload::encoder(self.seq_len as u64),
        };
        cfg.workload = Workload {
            prefill_tokens: self.prefill_tokens.unwrap_or(workload.prefill_tokens),
            decode_tokens: self.decode_tokens.unwrap_or(workload.decode_tokens),
        };
        cfg.limits = UserLimits {
            max_size_mb: self.max_size_mb,
            max_latency_ms: self.max_latency_ms,
            max_energy_mj: self.max_energy_mj,
            max_kl: self.max_kl,
        };
        cfg.space = self.space(decoder, &cfg.space)?;
        cfg.evolution = self.evolution()?;
        cfg.data = self.data();
        cfg.caches = CacheConfig {
            enabled: self.cache,
            surrogate: self.surrogate,
            epsilon: parse_epsilon(&self.epsilon)?,
            max_memory: self
                .max_memory
                .as_deref()
                .map(|s| crate::mem::parse_size("max_memory", s))
                .transpose()?,
            ..cfg.caches
        };
        cfg.baselines = BaselineConfig {
            lagrangian: self.baselines,
            random_search: self.random_search,
        };
        cfg.refine.enabled = self.refine;
        cfg.checkpoint.path = self.checkpoint.clone();
        cfg.checkpoint.resume = self.resume;
        cfg.tune_front = TuneFrontConfig {
            plans: self.tune_front,
            steps: self.tune_steps,
            sub_scales: self.tune_sub_scales,
        };
        Ok(cfg)
    }

    fn space(&self, decoder: bool, base: &SpaceConfig) -> Result<SpaceConfig> {
        let default_formats = match decoder {
            true => defaults::FORMATS,
            false => defaults::ENCODER_FORMATS,
        };
        Ok(SpaceConfig {
            unit: self.unit,
            tie_qkv: self.tie_qkv || self.tie_fused,
            tie_gate_up: self.tie_fused,
            formats: parse_formats(self.formats.as_deref().unwrap_or(default_formats))?,
            act_bits: parse_act_bits(&self.act_bits)?,
            ..base.clone()
        })
    }

    fn evolution(&self) -> Result<EvolutionConfig> {
        Ok(EvolutionConfig {
            population: self.population,
            generations: self.generations,
            seed: self.seed,
            time_budget: self
                .time_budget
                .as_deref()
                .map(parse_duration)
                .transpose()?,
            weights: FitnessWeights::parse(&self.weights)?,
            crossover: self.crossover,
            seed_plans: Vec::new(),
        })
    }

    fn data(&self) -> DataConfig {
        DataConfig {
            seq_len: self.seq_len,
            calib_windows: self.calib_windows,
            screen_windows: self.screen_windows,
            heldout_windows: self.heldout_windows,
            validation_windows: self.validation_windows,
            topk: defaults::TOPK,
            imatrix: match (&self.imatrix_file, self.imatrix) {
                (Some(p), _) => Importance::File(p.clone()),
                (None, true) => Importance::Collect,
                (None, false) => Importance::None,
            },
            rounding: self.rounding,
            sensitivity: self.sensitivity,
            head: self.head,
        }
    }
}

/// serde_json's message without its " at line L column C" (the input is not a file the
/// user can open).
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A wall-time limit: `90s`, `10m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = |why: &str| Error::setting("time_budget", format!("`{s}`: {why}"));
    let (num, scale) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1.0),
        Some((i, 'm')) => (&s[..i], 60.0),
        Some((i, 'h')) => (&s[..i], 3600.0),
        Some((_, c)) if c.is_ascii_alphabetic() => return Err(bad("unit must be s, m or h")),
        _ => (s, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| bad("expected a number and a unit, e.g. 90s, 10m, 1h"))?;
    let secs = v * scale;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(bad("must be positive"));
    }
    if secs > MAX_TIME_BUDGET_S {
        return Err(bad(
            "longer than a year; leave the budget out to run without one",
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The longest time budget accepted: beyond it a budget means nothing (and a `Duration`
/// of 10^20 hours does not exist).
const MAX_TIME_BUDGET_S: f64 = 365.0 * 24.0 * 3600.0;

/// The calibration and held-out texts of a search: the embedded splits by default; a
/// given `text` without a `heldout` keeps its last fifth (cut on a character boundary)
/// as the held-out text. An empty text is refused, naming the setting.
pub fn split_texts(text: Option<String>, heldout: Option<String>) -> Result<(String, String)> {
    for (t, what) in [(&text, "text"), (&heldout, "heldout")] {
        if t.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(Error::setting(what, "the text is empty"));
        }
    }
    let calib_default = || crate::assets::CALIB_TEXT.to_string();
    Ok(match (text, heldout) {
        (None, None) => (calib_default(), crate::assets::HELDOUT_TEXT.to_string()),
        (Some(t), Some(h)) => (t, h),
        (Some(t), None) => {
            let mut cut = t.len() * 4 / 5;
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            (t[..cut].to_string(), t[cut..].to_string())
        }
        (None, Some(h)) => (calib_default(), h),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_json_names_the_keyword_at_fault() {
        let s = Settings::from_json(r#"{"population": 8, "unit": "tensor"}"#).unwrap();
        assert_eq!((s.population, s.unit), (8, UnitMode::Tensor));
        let e = Settings::from_json(r#"{"seed": 1, "crossover": "blend"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("crossover: ") && e.contains("blend"), "{e}");
        let e = Settings::from_json(r#"{"populaton": 8}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("populaton: unknown field"), "{e}");
        let e = Settings::from_json(r#"{"generations": "many"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("generations: "), "{e}");
    }

    /// A time budget of 10^20 hours panicked (`Duration` overflow); `1e30s` was called
    /// a wrong unit.
    #[test]
    fn a_huge_time_budget_is_refused_not_a_panic() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        for s in ["99999999999999999999h", "1e30s", "1e30"] {
            let e = parse_duration(s).unwrap_err().to_string();
            assert!(e.contains("longer than a year"), "{s}: {e}");
        }
        for (s, why) in [
            ("10d", "unit must be"),
            ("-5m", "positive"),
            ("m", "expected a number"),
        ] {
            let e = parse_duration(s).unwrap_err().to_string();
            assert!(
                e.starts_with("time_budget: ") && e.contains(why),
                "{s}: {e}"
            );
        }
    }

    #[test]
    fn resolve_gives_the_defaults_and_names_bad_settings() {
        let dir = tempfile::tempdir().unwrap();
        crate::model::synthetic::write_llama_dir(dir.path(), &Default::default(), 1).unwrap();
        let m = Model::load(dir.path()).unwrap();
        let cfg = Settings::default().resolve(&m).unwrap();
        let want = SearchConfig::with_defaults().unwrap();
        assert_eq!(cfg.evolution.weights, want.evolution.weights);
        assert_eq!(cfg.space.formats, want.space.formats);
        assert_eq!(cfg.workload, want.workload);
        for (s, field) in [
            (
                Settings {
                    population: 2,
                    ..Settings::default()
                },
                "population",
            ),
            (
                Settings {
                    weights: "1,2".into(),
                    ..Settings::default()
                },
                "weights",
            ),
            (
                Settings {
                    time_budget: Some("5 days".into()),
                    ..Settings::default()
                },
                "time_budget",
            ),
        ] {
            let e = s.resolve(&m).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{field}: ")), "{e}");
        }
    }

    #[test]
    fn texts_split_off_the_last_fifth() {
        let (c, h) = split_texts(Some("abcdéfghij".into()), None).unwrap();
        assert_eq!(format!("{c}{h}"), "abcdéfghij");
        assert_eq!(h, "hij");
        let e = split_texts(None, Some("  ".into()))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("heldout: "), "{e}");
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
    }
}
