//! The resolved configuration of a search: the defaults (`defaults`, which `Settings` and
//! the CLI's flags read too, so they never drift), the grouped `SearchConfig` that
//! `Settings::resolve` builds, and `validate`, whose errors name the setting at fault
//! (`Error::Setting`, its field the `Settings` field a user sets).

use super::sensitivity::SensitivityMode;
use super::space::{self, UnitMode};
use crate::calib::ActScheme;
use crate::error::{Error, Result};
use crate::eval::HeadScore;
use crate::hw::{Profile, Workload};
use crate::plan::UserLimits;
use crate::quant::RoundingMode;
use crate::quant::WeightFormat;
use evo::operators::CrossoverKind;
use std::path::PathBuf;
use std::time::Duration;

/// The default of every setting, as the CLI spells it.
pub mod defaults {
    pub const TARGET: &str = "arm-neon";
    pub const UNIT: &str = "role";
    pub const FORMATS: &str = "ggml";
    /// An encoder's default: it exports to packed safetensors, which holds the generic
    /// integer formats (GGUF export is for decoders).
    pub const ENCODER_FORMATS: &str = "int";
    pub const ACT_BITS: &str = "8,16";
    /// The activation widths of a weights-only runtime (llama.cpp running a GGUF: its
    /// activations stay float): no choice quantizes activations, so the space and the
    /// sensitivity table hold no activation cells and no activation ranges are measured.
    pub const WEIGHTS_ONLY_ACT_BITS: &str = "16";
    pub const POPULATION: usize = 32;
    pub const GENERATIONS: u64 = 40;
    pub const SEED: u64 = 0;
    pub const WEIGHTS: &str = "0.4,0.3,0.15,0.15";
    pub const SEQ_LEN: usize = 128;
    pub const CALIB_WINDOWS: usize = 8;
    pub const SCREEN_WINDOWS: usize = 2;
    pub const HELDOUT_WINDOWS: usize = 8;
    /// Windows of the validation slice: calibration text after the calibration windows,
    /// never scored for fitting, on which the recommended plan is chosen.
    pub const VALIDATION_WINDOWS: usize = 8;
    /// Share of `time_budget` kept for the refine stage (the evolution gets the rest).
    pub const REFINE_TIME_SHARE: f64 = 0.2;
    /// 0 = the exact distribution whenever it is affordable (`eval::auto_topk`).
    pub const TOPK: usize = 0;
    /// The dequantized-weight cache a default memory budget leaves room for
    /// (`search::memory`).
    pub const WEIGHT_CACHE_BYTES: usize = 2 << 30;
    pub const PREFIX_CACHE_BYTES: usize = 1 << 30;
    /// Training steps per plan of `--tune-front`.
    pub const TUNE_STEPS: usize = 50;
    pub const EPSILON: [f64; 4] = [0.0; 4];
    /// Below this a population has no room for seeds, offspring and selection.
    pub const MIN_POPULATION: usize = 4;
}

/// Weights of the product brief's fitness `w1·accuracy + w2·compression + w3·latency +
/// w4·energy`, each term normalised to the FP model: accuracy is top-1 agreement with
/// FP, the others are `1 − value / FP value` (0 for FP, → 1 as the cost vanishes).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FitnessWeights {
    pub accuracy: f64,
    pub compression: f64,
    pub latency: f64,
    pub energy: f64,
}

impl Default for FitnessWeights {
    fn default() -> Self {
        FitnessWeights {
            accuracy: 0.4,
            compression: 0.3,
            latency: 0.15,
            energy: 0.15,
        }
    }
}

impl FitnessWeights {
    /// Parses `a,c,l,e`: four non-negative numbers, not all zero.
    pub fn parse(s: &str) -> Result<FitnessWeights> {
        let bad = || {
            Error::setting(
                "weights",
                format!("`{s}`: expected four non-negative numbers a,c,l,e, not all zero"),
            )
        };
        let v: Vec<f64> = s
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad())?;
        if v.len() != 4
            || v.iter().any(|x| !x.is_finite() || *x < 0.0)
            || v.iter().sum::<f64>() <= 0.0
        {
            return Err(bad());
        }
        Ok(FitnessWeights {
            accuracy: v[0],
            compression: v[1],
            latency: v[2],
            energy: v[3],
        })
    }
}

/// What the genome may choose.
#[derive(Debug, Clone)]
pub struct SpaceConfig {
    pub unit: UnitMode,
    /// Tie attn_q/attn_k/attn_v into one gene (runtimes fuse them).
    pub tie_qkv: bool,
    /// Tie ffn_gate/ffn_up into one gene too (`--tie-fused`: with `tie_qkv`, every fused
    /// module vLLM loads shares one scheme).
    pub tie_gate_up: bool,
    pub formats: Vec<WeightFormat>,
    pub act_bits: Vec<u8>,
    pub act_scheme: ActScheme,
    /// Calibrate activation ranges at this percentile instead of min/max.
    pub act_percentile: Option<f64>,
}

impl SpaceConfig {
    /// Whether no choice quantizes activations (`defaults::WEIGHTS_ONLY_ACT_BITS`): a
    /// weights-only runtime such as llama.cpp.
    pub fn weights_only(&self) -> bool {
        self.act_bits.iter().all(|&b| b >= 16)
    }
}

/// The evolution itself.
#[derive(Debug, Clone)]
pub struct EvolutionConfig {
    pub population: usize,
    pub generations: u64,
    pub seed: u64,
    pub time_budget: Option<Duration>,
    /// Picks the recommended plan when the user sets no limit.
    pub weights: FitnessWeights,
    /// How parents exchange genes (`CrossoverChoice::Auto`: by the unit mode).
    pub crossover: CrossoverChoice,
    /// Plans the caller knows to be good (the recipe's llama.cpp mix at its size): seeded
    /// first, where the space can encode them and they fit the size limit.
    pub seed_plans: Vec<crate::plan::TensorPlan>,
}

/// Screening tolerances: one value for every objective, or four, in the objectives'
/// order KL, bytes, ms, mJ; each a fraction in 0..1.
pub fn parse_epsilon(spec: &str) -> Result<[f64; 4]> {
    let bad = |msg: String| Error::setting("epsilon", msg);
    let v: Vec<f64> = spec
        .split(',')
        .map(|x| {
            x.trim()
                .parse::<f64>()
                .map_err(|_| bad(format!("{x:?} is not a number")))
        })
        .collect::<Result<_>>()?;
    if let Some(x) = v.iter().find(|x| !(0.0..1.0).contains(*x)) {
        return Err(bad(format!("{x} is outside 0..1")));
    }
    match v.as_slice() {
        [e] => Ok([*e; 4]),
        [a, b, c, d] => Ok([*a, *b, *c, *d]),
        _ => Err(bad(format!(
            "expected one value or four (KL,bytes,ms,mJ), got {}",
            v.len()
        ))),
    }
}

/// The crossover a search runs with. Genes are in block order (embedding, block 0, …,
/// output), so a one-point child keeps one parent's genes for every block before the
/// cut: the prefix cache then reuses that parent's hidden states up to the cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum CrossoverChoice {
    /// One-point where units follow the blocks (tensor and block units), uniform where
    /// every unit spans all blocks (role units: no prefix survives any change).
    Auto,
    Uniform,
    OnePoint,
    TwoPoint,
}

impl CrossoverChoice {
    /// `auto`, `uniform`, `one-point` or `two-point`.
    pub fn parse(s: &str) -> Result<CrossoverChoice> {
        Ok(match s {
            "auto" => CrossoverChoice::Auto,
            "uniform" => CrossoverChoice::Uniform,
            "one-point" => CrossoverChoice::OnePoint,
            "two-point" => CrossoverChoice::TwoPoint,
            other => {
                return Err(Error::setting(
                    "crossover",
                    format!(
                    "unknown crossover {other:?}; expected auto, uniform, one-point or two-point"
                ),
                ))
            }
        })
    }

    /// The kind for a space of `mode` units.
    pub fn kind(self, mode: UnitMode) -> CrossoverKind {
        match (self, mode) {
            (CrossoverChoice::Uniform, _) => CrossoverKind::Uniform,
            (CrossoverChoice::OnePoint, _) => CrossoverKind::OnePoint,
            (CrossoverChoice::TwoPoint, _) => CrossoverKind::TwoPoint,
            (CrossoverChoice::Auto, UnitMode::Role) => CrossoverKind::Uniform,
            (CrossoverChoice::Auto, _) => CrossoverKind::OnePoint,
        }
    }
}

/// The tokens plans are scored on.
#[derive(Debug, Clone)]
pub struct DataConfig {
    pub seq_len: usize,
    /// Calibration windows of a full evaluation.
    pub calib_windows: usize,
    /// Calibration windows of a screening evaluation (multi-fidelity).
    pub screen_windows: usize,
    pub heldout_windows: usize,
    /// Windows of the validation slice (calibration text after the calibration windows)
    /// the recommended plan and the refine stage's moves are chosen on; 0: chosen on the
    /// calibration windows.
    pub validation_windows: usize,
    /// Distribution entries kept per position; 0 = exact when affordable (`auto_topk`).
    pub topk: usize,
    /// The importance matrix GGML types are quantized with while scoring; an export must
    /// use the same one to write the scored bytes.
    pub imatrix: Importance,
    /// How GGML block types round: llama.cpp's per-block rounding, or qevo's output-error
    /// rounding on input moments of the calibration windows (recorded in plan files).
    pub rounding: RoundingMode,
    /// How the sensitivity table is filled: every cell measured, or probes scaled by
    /// weight error (`search::sensitivity`).
    pub sensitivity: SensitivityMode,
    /// How calibration scores run the output layer (`eval::head`).
    pub head: HeadScore,
}

/// Where a search's importance matrix comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Importance {
    /// None: every type rounds unweighted (iq2_xs, iq2_xxs and iq1_s cannot be scored).
    #[default]
    None,
    /// Collected on the calibration windows (`calib::collect_imatrix`).
    Collect,
    /// Read from a llama.cpp or qevo imatrix file (`calib::Imatrix::read`).
    File(PathBuf),
}

/// The evaluator's caches.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Fitness, prefix and multi-fidelity caches (off: the baseline for the speed-up).
    pub enabled: bool,
    /// The surrogate screen before any forward pass (only with `enabled`).
    pub surrogate: bool,
    /// Screens skip plans within a factor 1 + epsilon of an archive member in every
    /// objective, in the objectives' order [KL, bytes, ms, mJ] (all 0: only dominated
    /// plans are skipped).
    pub epsilon: [f64; 4],
    /// The one memory budget of the run, in bytes (`search::memory`): the weight cache
    /// gets what the model, references, activations and prefix cache leave. None: the
    /// fixed parts plus `WEIGHT_CACHE_BYTES`, capped by the machine's available memory.
    pub max_memory: Option<u64>,
    pub prefix_cache_bytes: usize,
}

/// Baselines scored in the same run.
#[derive(Debug, Clone)]
pub struct BaselineConfig {
    /// Lagrangian plans at the uniform plans' sizes.
    pub lagrangian: bool,
    /// Random search with the evolution's genome budget (doubles the run time).
    pub random_search: bool,
}

/// The refine stage after the evolution (`search::refine`): at a size limit, a greedy
/// local search from the best plans that spends the remaining bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefineConfig {
    pub enabled: bool,
    /// Share of the time budget it gets (the evolution runs on the rest).
    pub time_share: f64,
}

/// Where the engine checkpoints, and whether to continue from it.
#[derive(Debug, Clone, Default)]
pub struct CheckpointConfig {
    pub path: Option<PathBuf>,
    pub resume: bool,
}

/// Tuning after the search (`search::tune_front`): the front plans nearest the
/// recommended size, trained toward the FP model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TuneFrontConfig {
    /// How many front plans (0: no tuning).
    pub plans: usize,
    /// Training steps per plan.
    pub steps: usize,
    /// Train the integer sub-scales too.
    pub sub_scales: bool,
}

/// A search's resolved configuration (`Settings::resolve` builds it).
#[derive(Debug, Clone)]
pub struct SearchConfig {
    pub target: Profile,
    pub workload: Workload,
    pub limits: UserLimits,
    pub space: SpaceConfig,
    pub evolution: EvolutionConfig,
    pub data: DataConfig,
    pub caches: CacheConfig,
    pub baselines: BaselineConfig,
    pub refine: RefineConfig,
    pub checkpoint: CheckpointConfig,
    pub tune_front: TuneFrontConfig,
}

impl SearchConfig {
    /// The defaults on `target`, with its workload.
    pub fn for_target(target: Profile) -> Result<SearchConfig> {
        let workload = target.workload;
        Ok(SearchConfig {
            target,
            workload,
            limits: UserLimits::default(),
            space: SpaceConfig {
                unit: UnitMode::parse(defaults::UNIT)?,
                tie_qkv: false,
                tie_gate_up: false,
                formats: space::parse_formats(defaults::FORMATS)?,
                act_bits: space::parse_act_bits(defaults::ACT_BITS)?,
                act_scheme: ActScheme::Asym,
                act_percentile: None,
            },
            evolution: EvolutionConfig {
                population: defaults::POPULATION,
                generations: defaults::GENERATIONS,
                seed: defaults::SEED,
                time_budget: None,
                weights: FitnessWeights::parse(defaults::WEIGHTS)?,
                crossover: CrossoverChoice::Auto,
                seed_plans: Vec::new(),
            },
            data: DataConfig {
                seq_len: defaults::SEQ_LEN,
                calib_windows: defaults::CALIB_WINDOWS,
                screen_windows: defaults::SCREEN_WINDOWS,
                heldout_windows: defaults::HELDOUT_WINDOWS,
                validation_windows: defaults::VALIDATION_WINDOWS,
                topk: defaults::TOPK,
                imatrix: Importance::None,
                rounding: RoundingMode::Block,
                sensitivity: SensitivityMode::Auto,
                head: HeadScore::Auto,
            },
            caches: CacheConfig {
                enabled: true,
                surrogate: true,
                epsilon: defaults::EPSILON,
                max_memory: None,
                prefix_cache_bytes: defaults::PREFIX_CACHE_BYTES,
            },
            baselines: BaselineConfig {
                lagrangian: true,
                random_search: false,
            },
            refine: RefineConfig {
                enabled: true,
                time_share: defaults::REFINE_TIME_SHARE,
            },
            checkpoint: CheckpointConfig::default(),
            tune_front: TuneFrontConfig {
                plans: 0,
                steps: defaults::TUNE_STEPS,
                sub_scales: false,
            },
        })
    }

    /// The defaults on the default target.
    pub fn with_defaults() -> Result<SearchConfig> {
        Self::for_target(crate::hw::builtin(defaults::TARGET)?)
    }

    /// Checks every setting a search cannot run with; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let positive = |field: &str, v: usize| match v {
            0 => Err(Error::setting(field, "must be at least 1")),
            _ => Ok(()),
        };
        if self.evolution.population < defaults::MIN_POPULATION {
            return Err(Error::setting(
                "population",
                format!(
                    "must be at least {}, got {}",
                    defaults::MIN_POPULATION,
                    self.evolution.population
                ),
            ));
        }
        positive("seq_len", self.data.seq_len)?;
        positive("calib_windows", self.data.calib_windows)?;
        positive("screen_windows", self.data.screen_windows)?;
        positive("heldout_windows", self.data.heldout_windows)?;
        // Checked here, not first by the tune stage after the whole search has run.
        if self.tune_front.plans > 0 && self.tune_front.steps == 0 {
            return Err(Error::setting(
                "tune_steps",
                "must be at least 1 to tune front plans",
            ));
        }
        if self.data.seq_len < 2 {
            return Err(Error::setting(
                "seq_len",
                "must be at least 2 (a window predicts its next tokens)",
            ));
        }
        if self.space.formats.is_empty() {
            return Err(Error::setting("formats", "lists no format"));
        }
        if self.space.act_bits.is_empty() {
            return Err(Error::setting("act_bits", "lists no width"));
        }
        if let Some(p) = self.space.act_percentile {
            if !(p > 50.0 && p <= 100.0) {
                return Err(Error::setting(
                    "act_percentile",
                    format!("must be in (50, 100], got {p}"),
                ));
            }
        }
        let unweighted: Vec<String> = match self.data.imatrix {
            Importance::None => self
                .space
                .formats
                .iter()
                .filter(|f| f.requires_imatrix())
                .map(|f| f.name())
                .collect(),
            _ => Vec::new(),
        };
        if !unweighted.is_empty() {
            return Err(Error::setting(
                "formats",
                format!(
                    "{} cannot be quantized without an importance matrix (llama.cpp refuses \
                     them too): collect one or give an imatrix file, or leave them out",
                    unweighted.join(", ")
                ),
            ));
        }
        self.validate_limits()?;
        if self.checkpoint.resume && self.checkpoint.path.is_none() {
            return Err(Error::setting(
                "resume",
                "needs a checkpoint path to resume from",
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<()> {
        let l = &self.limits;
        for (field, v) in [
            ("max_size_mb", l.max_size_mb),
            ("max_latency_ms", l.max_latency_ms),
            ("max_energy_mj", l.max_energy_mj),
            ("max_kl", l.max_kl),
        ] {
            if let Some(x) = v {
                if !(x.is_finite() && x > 0.0) {
                    return Err(Error::setting(
                        field,
                        format!("must be a positive number, got {x}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let cfg = SearchConfig::with_defaults().unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.evolution.population, defaults::POPULATION);
        assert_eq!(cfg.evolution.weights, FitnessWeights::default());
    }

    #[test]
    fn validate_names_the_field() {
        let mut cfg = SearchConfig::with_defaults().unwrap();
        cfg.evolution.population = 2;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.starts_with("population:"), "{e}");
        let mut cfg = SearchConfig::with_defaults().unwrap();
        cfg.data.calib_windows = 0;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.starts_with("calib_windows:"), "{e}");
        let mut cfg = SearchConfig::with_defaults().unwrap();
        cfg.limits.max_kl = Some(f64::NAN);
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.starts_with("max_kl:"), "{e}");
        let mut cfg = SearchConfig::with_defaults().unwrap();
        cfg.tune_front.plans = 1;
        cfg.tune_front.steps = 0;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.starts_with("tune_steps:"), "{e}");
    }

    #[test]
    fn weights_parse_rejects_bad_lists() {
        assert!(FitnessWeights::parse("1,0,0,0").is_ok());
        for bad in ["1,2,3", "0,0,0,0", "-1,1,1,1", "a,b,c,d", "1,1,1,inf"] {
            let e = FitnessWeights::parse(bad).unwrap_err().to_string();
            assert!(e.contains("weights"), "{bad}: {e}");
        }
    }

    #[test]
    fn crossover_auto_keeps_prefixes_where_genes_follow_the_blocks() {
        use evo::operators::CrossoverKind;
        let auto = CrossoverChoice::parse("auto").unwrap();
        assert_eq!(auto.kind(UnitMode::Tensor), CrossoverKind::OnePoint);
        assert_eq!(auto.kind(UnitMode::Block), CrossoverKind::OnePoint);
        assert_eq!(auto.kind(UnitMode::Role), CrossoverKind::Uniform);
        let fixed = CrossoverChoice::parse("two-point").unwrap();
        assert_eq!(fixed.kind(UnitMode::Role), CrossoverKind::TwoPoint);
        let e = CrossoverChoice::parse("blend").unwrap_err().to_string();
        assert!(e.contains("crossover") && e.contains("blend"), "{e}");
    }

    #[test]
    fn epsilon_takes_one_value_or_four() {
        assert_eq!(parse_epsilon("0.05").unwrap(), [0.05; 4]);
        assert_eq!(
            parse_epsilon("0.1,0.01,0.1,0.1").unwrap(),
            [0.1, 0.01, 0.1, 0.1]
        );
        for bad in ["0.1,0.2", "x", "1.5", "-0.1"] {
            let e = parse_epsilon(bad).unwrap_err().to_string();
            assert!(e.contains("epsilon"), "{bad}: {e}");
        }
    }
}
