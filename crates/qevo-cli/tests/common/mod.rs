//! What the CLI tests share: running the `qevo` binary with its own cache directory, its
//! output as one string, and a small, fast search on the embedded model.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub fn qevo(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qevo"))
        .args(args)
        .env("QEVO_CACHE_DIR", cache)
        .output()
        .expect("run qevo")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Two 64-token windows, population 8: seconds per search.
pub const SMALL: &[&str] = &[
    "--population",
    "8",
    "--seq-len",
    "64",
    "--calib-windows",
    "2",
    "--screen-windows",
    "1",
    "--heldout-windows",
    "2",
];

/// `base` with `overrides` replacing the flags of the same name (a flag takes the next
/// item as its value unless that is a flag too) and adding the rest, in order: the one
/// builder of every test's flag list, so a test states only how it differs.
pub fn flags<S: AsRef<str>>(base: &[S], overrides: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = base.iter().map(|s| s.as_ref().to_string()).collect();
    let mut i = 0;
    while i < overrides.len() {
        let k = overrides[i];
        let v = overrides
            .get(i + 1)
            .filter(|v| !v.starts_with("--"))
            .map(|v| v.to_string());
        i += 1 + usize::from(v.is_some());
        match (out.iter().position(|s| s == k), v) {
            (Some(at), Some(v)) => out[at + 1] = v,
            (Some(_), None) => {}
            (None, v) => {
                out.push(k.to_string());
                out.extend(v);
            }
        }
    }
    out
}

/// `SMALL` for the tiny llama fixture, with `overrides`: 32-token windows and two
/// validation windows, a second a search.
pub fn tiny_search(overrides: &[&str]) -> Vec<String> {
    let tiny = flags(SMALL, &["--seq-len", "32", "--validation-windows", "2"]);
    flags(&tiny, overrides)
}

/// `qevo tune` settings that take a second on the tiny llama fixture.
pub const TUNE: &[&str] = &[
    "--seq-len",
    "32",
    "--windows",
    "6",
    "--heldout-windows",
    "2",
    "--batch",
    "2",
    "--checkpoint-every",
    "1",
];

/// `TUNE` with `overrides`.
pub fn tune_flags(overrides: &[&str]) -> Vec<String> {
    flags(TUNE, overrides)
}

/// `qevo gguf` in seconds, not minutes: 64-token windows, one generation of four plans,
/// two tune steps.
pub const GGUF: &[&str] = &[
    "--seq-len",
    "64",
    "--validation-windows",
    "2",
    "--tune-windows",
    "4",
    "--search-seq-len",
    "64",
    "--calib-windows",
    "2",
    "--generations",
    "1",
    "--population",
    "4",
    "--tune-steps",
    "2",
];

/// `GGUF` with `overrides`.
pub fn gguf_flags(overrides: &[&str]) -> Vec<String> {
    flags(GGUF, overrides)
}

/// `qevo search --target arm-neon --out OUT` with `SMALL` and `extra`.
pub fn search(out: &Path, cache: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "search",
        "--target",
        "arm-neon",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    qevo(&args, cache)
}

/// The embedded model's quantizable tensor names, in model order.
pub fn embedded_tensor_names() -> Vec<String> {
    const PARTS: [&str; 7] = [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];
    let mut names = vec!["token_embd.weight".to_string()];
    for b in 0..4 {
        names.extend(PARTS.iter().map(|p| format!("blk.{b}.{p}.weight")));
    }
    names.push("output.weight".into());
    names
}

/// A plan for the embedded model (4 blocks, untied output) cycling through `formats`.
pub fn embedded_plan(formats: &[&str]) -> String {
    let names = embedded_tensor_names();
    let tensors: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                r#"{{"name":"{n}","format":"{}","act_bits":16}}"#,
                formats[i % formats.len()]
            )
        })
        .collect();
    format!(
        r#"{{"schema_version":1,"qevo_version":"0","model":"embedded","model_fingerprint":"{}","target":"arm-neon","seed":0,"unit":"tensor","metrics":null,"tensors":[{}]}}"#,
        embedded_fingerprint(),
        tensors.join(",")
    )
}

/// The embedded model's weight fingerprint, as `qevo inspect` prints it.
pub fn embedded_fingerprint() -> String {
    let cache = tempfile::tempdir().unwrap();
    let o = qevo(&["inspect", "--fingerprint"], cache.path());
    text(&o)
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint:"))
        .map(|f| f.trim().to_string())
        .expect("inspect prints the fingerprint")
}

/// A plan made for another model: another fingerprint, a tensor the embedded model lacks.
pub const OTHER_MODEL_PLAN: &str = r#"{"schema_version":1,"qevo_version":"0","model":"x","model_fingerprint":"0","target":"arm-neon","seed":0,"unit":"role","metrics":null,
    "tensors":[{"name":"blk.99.attn_q.weight","format":"q4_k","act_bits":16}]}"#;
