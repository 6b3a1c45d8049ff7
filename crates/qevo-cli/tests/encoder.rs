//! Encoders end to end through the CLI: a small BERT (the committed random-weight
//! fixture with a WordPiece tokenizer written here) is scored by 1 − cosine of pooled
//! embeddings, searched, reported with that label, and k-NN accuracy is printed for
//! labelled texts.

mod common;

use common::{qevo, text, SMALL};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../qevo/tests/fixtures")
}

/// A WordPiece tokenizer.json over the fixture's 300-id vocabulary: specials, letters,
/// `##` letters and common words, so any lowercase text tokenizes.
fn wordpiece_json() -> serde_json::Value {
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(String::from)
        .to_vec();
    for c in 'a'..='z' {
        vocab.push(c.to_string());
        vocab.push(format!("##{c}"));
    }
    vocab.extend("0123456789.,;:'\"()-!?".chars().map(|c| c.to_string()));
    let words = "the of and to in is was for on as with by at from that his her it an be \
                 which are were this or had not but first one their its also after new who \
                 they has have been two city world century war state during between";
    vocab.extend(words.split_whitespace().map(String::from));
    let ids: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), i.into()))
        .collect();
    assert!(vocab.len() <= 300);
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                        "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": ids}
    })
}

/// The tiny BERT fixture with a tokenizer, in a temp dir.
fn tiny_bert(dir: &Path) -> PathBuf {
    let m = dir.join("tiny_bert");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("tiny_bert").join(f), m.join(f)).unwrap();
    }
    std::fs::write(m.join("tokenizer.json"), wordpiece_json().to_string()).unwrap();
    m
}

#[test]
fn encoder_quantize_reports_cosine_and_knn_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tiny_bert(tmp.path());
    let labels = fixtures().join("labelled/topics.tsv");
    let o = qevo(
        &[
            "quantize",
            m.to_str().unwrap(),
            "--format",
            "q4_0",
            "--seq-len",
            "32",
            "--max-windows",
            "8",
            "--labels",
            labels.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let loss: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("1 - cos to FP:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no cosine line: {out}"));
    // 4-bit weights move a random encoder's embeddings, but not to orthogonal.
    assert!(loss > 0.0 && loss < 0.5, "{out}");
    assert!(
        out.contains("k-NN accuracy:") && out.contains("32 labelled texts, 4 labels"),
        "{out}"
    );
    assert!(!out.contains("perplexity"), "{out}");
}

#[test]
fn encoder_search_writes_a_front_labelled_by_cosine() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tiny_bert(tmp.path());
    let out_dir = tmp.path().join("out");
    let labels = fixtures().join("labelled/topics.tsv");
    let mut args = vec![
        "search",
        m.to_str().unwrap(),
        "--target",
        "arm-neon",
        "--generations",
        "1",
        "--out",
        out_dir.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    // SMALL's 64-token windows equal the fixture's 64 positions; the encoder's windows
    // include [CLS] and [SEP].
    let o = qevo(&args, tmp.path());
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("1-cos"),
        "report columns not relabelled: {out}"
    );
    assert!(out.contains("64 prompt + 0 generated tokens"), "{out}");
    assert!(out.contains("k-NN accuracy of the chosen plan:"), "{out}");
    let front: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("front.json")).unwrap())
            .unwrap();
    let plans = front["plans"]
        .as_array()
        .or(front.as_array())
        .map_or(0, |a| a.len());
    assert!(plans > 0, "{front}");
    let report = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(report.contains("1 - cosine to FP embeddings"));
}
