//! GGUF tokenizers against llama.cpp's `llama-tokenize`: the committed fixtures (vocabularies
//! cut from real models, with the ids llama-tokenize gave for every text; made by
//! scripts/make_tokenizer_fixtures.py), and, where the tool is built, a live comparison on
//! edge-case strings.

mod common;

use common::llama_tools::llama_tool;
use qevo::model::tokenizer::{from_gguf_file, TextTokenizer};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

const FAMILIES: &[&str] = &["smollm2", "gemma3", "minilm"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

/// Unpacks `<family>.vocab.gguf.gz` into `dir` and returns the GGUF's path.
fn unpack(family: &str, dir: &Path) -> PathBuf {
    let gz = std::fs::File::open(fixtures().join(format!("{family}.vocab.gguf.gz"))).unwrap();
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut bytes)
        .unwrap();
    let path = dir.join(format!("{family}.vocab.gguf"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn texts() -> BTreeMap<String, String> {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("texts.json")).unwrap()).unwrap()
}

fn recorded_ids(family: &str) -> BTreeMap<String, Vec<u32>> {
    let s = std::fs::read_to_string(fixtures().join(format!("{family}.ids.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    serde_json::from_value(v["ids"].clone()).unwrap()
}

/// (equal, total, first difference) over every text of one family.
fn agreement(
    tk: &TextTokenizer,
    want: &BTreeMap<String, Vec<u32>>,
) -> (usize, usize, Option<String>) {
    let mut equal = 0;
    let mut first = None;
    for (name, text) in texts() {
        let got = tk.encode(&text, true).unwrap();
        let exp = &want[&name];
        if &got == exp {
            equal += 1;
        } else if first.is_none() {
            let at = got.iter().zip(exp).take_while(|(a, b)| a == b).count();
            first = Some(format!(
                "{name}: first difference at token {at}: qevo {:?} llama.cpp {:?}",
                &got[at..got.len().min(at + 6)],
                &exp[at..exp.len().min(at + 6)]
            ));
        }
    }
    (equal, want.len(), first)
}

#[test]
fn gguf_tokenizers_match_llama_tokenize_on_every_fixture_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for family in FAMILIES {
        let tk = from_gguf_file(&unpack(family, dir.path())).unwrap();
        let (equal, total, first) = agreement(&tk, &recorded_ids(family));
        println!("{family}: ids equal to llama-tokenize on {equal} of {total} texts");
        if equal != total {
            failures.push(format!(
                "{family}: {equal} of {total}; {}",
                first.unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn llama_tokenize(tool: &Path, model: &Path, text: &str, dir: &Path) -> Vec<u32> {
    let file = dir.join("prompt.txt");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(tool)
        .arg("-m")
        .arg(model)
        .arg("-f")
        .arg(&file)
        .args(["--ids", "--log-disable", "--no-escape"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap()
}

/// Short strings at the edges of each algorithm: empty input, lone and repeated spaces
/// and newlines, a leading space, bytes with no token, contractions, digit runs.
const EDGE_CASES: &[&str] = &[
    "",
    " ",
    "   ",
    "\n",
    "\n\n\n",
    " a",
    "a  b",
    "a\n\nb ",
    "\t\tx",
    "don't WE'LL I'm",
    "1234567 89",
    "ÿ€𝔘",
    "🙂🙂🙂",
    "x\u{200D}y\u{FEFF}z",
    "Ελληνικά русский 中文 日本語 한국어 العربية",
];

#[test]
fn gguf_tokenizers_match_llama_tokenize_live_on_edge_cases() {
    let Some(tool) = llama_tool(
        "llama-tokenize",
        "gguf_tokenizers_match_llama_tokenize_live_on_edge_cases",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for family in FAMILIES {
        let model = unpack(family, dir.path());
        let tk = from_gguf_file(&model).unwrap();
        let mut equal = 0;
        for text in EDGE_CASES {
            let want = llama_tokenize(&tool, &model, text, dir.path());
            let got = tk.encode(text, true).unwrap();
            if got == want {
                equal += 1;
            } else {
                failures.push(format!(
                    "{family} {text:?}: qevo {got:?} llama.cpp {want:?}"
                ));
            }
        }
        println!(
            "{family}: live edge cases equal on {equal} of {}",
            EDGE_CASES.len()
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The full SmolLM2 GGUF loads as a `Model` with its tokenizer (run by hand after
/// scripts/fetch_models.sh: `cargo test --release -p qevo --test tokenizer_llama_cpp -- --ignored`).
#[test]
#[ignore]
fn real_smollm2_model_loads_with_its_tokenizer() {
    let path = PathBuf::from(std::env::var_os("HOME").unwrap())
        .join(".cache/qevo/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        println!("SKIP: {} missing (scripts/fetch_models.sh)", path.display());
        return;
    }
    let model = qevo::Model::load(&path).unwrap();
    let ids = model.encode("Hello world").unwrap();
    let want = recorded_ids("smollm2");
    assert!(!ids.is_empty());
    // The fixture's first English words tokenize the same through the full model.
    let english = &texts()["english"];
    let full = model
        .tokenizer
        .as_ref()
        .unwrap()
        .encode(english, true)
        .unwrap();
    assert_eq!(full, want["english"]);
}
