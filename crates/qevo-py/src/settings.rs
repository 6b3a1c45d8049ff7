//! The keyword arguments of `qevo.search` as one serde record, and the one function that
//! turns them into the library's `SearchConfig` and texts. The driver and every Ray
//! worker call it on the same JSON, so they build the same setup (which the setup
//! fingerprint then checks). Defaults are the library's (`qevo::search::defaults`).

use qevo::hw::{parse_constraint_override, resolve_profile, Workload};
use qevo::plan::UserLimits;
use qevo::search::config::{parse_epsilon, CrossoverChoice};
use qevo::search::sensitivity::SensitivityMode;
use qevo::search::space::{parse_act_bits, parse_formats, UnitMode};
use qevo::search::{defaults, FitnessWeights, Importance, SearchConfig};
use qevo::{Error, Model, Result};
use std::path::PathBuf;
use std::time::Duration;

/// `qevo.search`'s settings; a field left out takes the library default.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Calibration text (None: the embedded split). Without `heldout`, its last fifth is
    /// held out, as in the CLI.
    pub text: Option<String>,
    pub heldout: Option<String>,
    pub target: String,
    pub formats: Option<String>,
    pub unit: String,
    pub tie_qkv: bool,
    pub act_bits: String,
    pub generations: u64,
    pub population: usize,
    pub seed: u64,
    pub time_budget_s: Option<f64>,
    pub weights: Option<[f64; 4]>,
    pub max_size_mb: Option<f64>,
    pub max_latency_ms: Option<f64>,
    pub max_energy_mj: Option<f64>,
    pub max_kl: Option<f64>,
    pub constraints: Vec<String>,
    pub prefill_tokens: Option<u64>,
    pub decode_tokens: Option<u64>,
    pub cache: bool,
    pub surrogate: bool,
    /// One value or "KL,bytes,ms,mJ", as the CLI's `--epsilon`.
    pub epsilon: String,
    pub crossover: String,
    /// "auto", "measured" or "scaled", as the CLI's `--sensitivity`.
    pub sensitivity: String,
    pub baselines: bool,
    pub random_search: bool,
    pub seq_len: usize,
    pub calib_windows: usize,
    pub screen_windows: usize,
    pub heldout_windows: usize,
    pub imatrix: bool,
    pub checkpoint: Option<PathBuf>,
    pub resume: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            text: None,
            heldout: None,
            target: defaults::TARGET.into(),
            formats: None,
            unit: defaults::UNIT.into(),
            tie_qkv: false,
            act_bits: defaults::ACT_BITS.into(),
            generations: defaults::GENERATIONS,
            population: defaults::POPULATION,
            seed: defaults::SEED,
            time_budget_s: None,
            weights: None,
            max_size_mb: None,
            max_latency_ms: None,
            max_energy_mj: None,
            max_kl: None,
            constraints: Vec::new(),
            prefill_tokens: None,
            decode_tokens: None,
            cache: true,
            surrogate: true,
            epsilon: "0".into(),
            crossover: "auto".into(),
            sensitivity: "auto".into(),
            baselines: true,
            random_search: false,
            seq_len: defaults::SEQ_LEN,
            calib_windows: defaults::CALIB_WINDOWS,
            screen_windows: defaults::SCREEN_WINDOWS,
            heldout_windows: defaults::HELDOUT_WINDOWS,
            imatrix: false,
            checkpoint: None,
            resume: false,
        }
    }
}

/// Config field → the keyword that sets it, so a setting error names what the user typed.
const KEYWORD_OF: &[(&str, &str)] = &[
    ("evolution.population", "population"),
    ("evolution.generations", "generations"),
    ("evolution.weights", "weights"),
    ("evolution.crossover", "crossover"),
    ("caches.epsilon", "epsilon"),
    ("data.sensitivity", "sensitivity"),
    ("data.seq_len", "seq_len"),
    ("data.calib_windows", "calib_windows"),
    ("data.screen_windows", "screen_windows"),
    ("data.heldout_windows", "heldout_windows"),
    ("space.unit", "unit"),
    ("space.formats", "formats"),
    ("space.act_bits", "act_bits"),
    ("limits.max_size_mb", "max_size_mb"),
    ("limits.max_latency_ms", "max_latency_ms"),
    ("limits.max_energy_mj", "max_energy_mj"),
    ("limits.max_kl", "max_kl"),
    ("checkpoint.resume", "resume"),
];

/// Renames a setting error's config field to its keyword; other errors pass unchanged.
pub fn keyword_names(e: Error) -> Error {
    match e {
        Error::Setting { field, msg } => {
            let field = KEYWORD_OF
                .iter()
                .find(|(f, _)| *f == field)
                .map_or(field, |(_, k)| k.to_string());
            Error::Setting { field, msg }
        }
        other => other,
    }
}

impl Settings {
    pub fn parse(json: &str) -> Result<Settings> {
        serde_json::from_str(json).map_err(|e| Error::Setting {
            field: "search".into(),
            msg: e.to_string(),
        })
    }

    /// The validated search config for `model` (an encoder gets the CLI's encoder defaults).
    pub fn config(&self, model: &Model) -> Result<SearchConfig> {
        self.build(model).and_then(validated).map_err(keyword_names)
    }

    fn build(&self, model: &Model) -> Result<SearchConfig> {
        let overrides = self
            .constraints
            .iter()
            .map(|c| parse_constraint_override(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let target = resolve_profile(&self.target)?.with_overrides(&overrides)?;
        let mut cfg = SearchConfig::for_target(target)?;
        let (workload, formats) = match model.arch.is_decoder() {
            true => (cfg.workload, defaults::FORMATS),
            // An encoder generates nothing: it embeds one window per pass.
            false => (
                Workload::encoder(self.seq_len as u64),
                defaults::ENCODER_FORMATS,
            ),
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
        cfg.space.unit = UnitMode::parse(&self.unit)?;
        cfg.space.tie_qkv = self.tie_qkv;
        cfg.space.formats = parse_formats(self.formats.as_deref().unwrap_or(formats))?;
        cfg.space.act_bits = parse_act_bits(&self.act_bits)?;
        cfg.evolution.generations = self.generations;
        cfg.evolution.population = self.population;
        cfg.evolution.seed = self.seed;
        cfg.evolution.time_budget = self.time_budget_s.map(duration).transpose()?;
        if let Some(w) = self.weights {
            let text = w.map(|x| x.to_string()).join(",");
            cfg.evolution.weights = FitnessWeights::parse(&text)?;
        }
        cfg.caches.enabled = self.cache;
        cfg.caches.surrogate = self.surrogate;
        cfg.caches.epsilon = parse_epsilon(&self.epsilon)?;
        cfg.evolution.crossover = CrossoverChoice::parse(&self.crossover)?;
        cfg.data.sensitivity = SensitivityMode::parse(&self.sensitivity)?;
        cfg.baselines.lagrangian = self.baselines;
        cfg.baselines.random_search = self.random_search;
        cfg.data.seq_len = self.seq_len;
        cfg.data.calib_windows = self.calib_windows;
        cfg.data.screen_windows = self.screen_windows;
        cfg.data.heldout_windows = self.heldout_windows;
        cfg.data.imatrix = match self.imatrix {
            true => Importance::Collect,
            false => Importance::None,
        };
        cfg.checkpoint.path = self.checkpoint.clone();
        cfg.checkpoint.resume = self.resume;
        Ok(cfg)
    }

    /// Calibration and held-out texts: the embedded splits, or the given ones (the last
    /// fifth of `text` held out when no `heldout` is given).
    pub fn texts(&self) -> Result<(String, String)> {
        let non_empty = |t: &str, what: &str| match t.trim().is_empty() {
            true => Err(setting(what, "the text is empty")),
            false => Ok(()),
        };
        if let Some(t) = &self.text {
            non_empty(t, "text")?;
        }
        if let Some(h) = &self.heldout {
            non_empty(h, "heldout")?;
        }
        Ok(match (&self.text, &self.heldout) {
            (None, None) => (
                qevo::assets::CALIB_TEXT.into(),
                qevo::assets::HELDOUT_TEXT.into(),
            ),
            (Some(t), Some(h)) => (t.clone(), h.clone()),
            (Some(t), None) => {
                let mut cut = t.len() * 4 / 5;
                while !t.is_char_boundary(cut) {
                    cut -= 1;
                }
                (t[..cut].to_string(), t[cut..].to_string())
            }
            (None, Some(h)) => (qevo::assets::CALIB_TEXT.into(), h.clone()),
        })
    }
}

fn setting(field: &str, msg: impl Into<String>) -> Error {
    Error::Setting {
        field: field.into(),
        msg: msg.into(),
    }
}

fn validated(cfg: SearchConfig) -> Result<SearchConfig> {
    cfg.validate()?;
    Ok(cfg)
}

fn duration(secs: f64) -> Result<Duration> {
    match secs.is_finite() && secs > 0.0 {
        true => Ok(Duration::from_secs_f64(secs)),
        false => Err(setting(
            "time_budget_s",
            format!("must be a positive number of seconds, got {secs}"),
        )),
    }
}
