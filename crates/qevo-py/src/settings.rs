//! What `qevo.search` sends across: the library's own `search::Settings` (its keyword
//! arguments, deserialised with the same names, so there is no table of keywords here)
//! and the two texts. The driver and every Ray worker parse the same JSON, so they build
//! the same setup (which the setup fingerprint then checks).

use qevo::search::{split_texts, SearchConfig, Settings};
use qevo::{Error, Model, Result};

/// A search request: `{"settings": {...}, "text": str | null, "heldout": str | null}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(default)]
    settings: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    heldout: Option<String>,
}

/// The settings and the calibration / held-out texts of one search.
pub struct Request {
    pub settings: Settings,
    pub calib: String,
    pub heldout: String,
}

impl Request {
    pub fn parse(json: &str) -> Result<Request> {
        let env: Envelope = serde_json::from_str(json).map_err(|e| Error::Setting {
            field: "search".into(),
            msg: e.to_string(),
        })?;
        let settings = Settings::from_json(&serde_json::Value::Object(env.settings).to_string())?;
        let (calib, heldout) = split_texts(env.text, env.heldout)?;
        Ok(Request {
            settings,
            calib,
            heldout,
        })
    }

    /// The validated search config for `model` (`Settings::resolve`).
    pub fn config(&self, model: &Model) -> Result<SearchConfig> {
        self.settings.resolve(model)
    }
}
