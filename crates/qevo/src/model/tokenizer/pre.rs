//! BPE pre-tokenizers by `tokenizer.ggml.pre` name: the table (generated from llama.cpp's
//! source into `pre_table.rs`), the lookup with its error, and the `tokenizers` pre-tokenizer
//! each entry becomes.

use super::pre_table::PRE_TOKENIZERS;
use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

/// One llama.cpp pre-tokenizer type.
#[derive(Debug)]
pub struct PreTokenizer {
    /// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*` name, lower-cased.
    pub llama_type: &'static str,
    /// The `tokenizer.ggml.pre` values that select it.
    pub names: &'static [&'static str],
    /// Split regexes applied in sequence: each splits every piece the previous left, and
    /// keeps both the matches and the text between them (llama.cpp's `unicode_regex_split`).
    pub regexes: &'static [&'static str],
    /// Pieces are mapped to GPT-2's byte-to-unicode alphabet before BPE.
    pub byte_level: bool,
    /// A piece that is itself a token is taken whole, before any merge.
    pub ignore_merges: bool,
    /// llama.cpp adds BOS for this type unless `tokenizer.ggml.add_bos_token` says otherwise.
    pub add_bos: bool,
}

/// Every supported `tokenizer.ggml.pre` value, in table order.
pub fn supported_names() -> Vec<&'static str> {
    PRE_TOKENIZERS
        .iter()
        .flat_map(|p| p.names.iter().copied())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The pre-tokenizer a name selects; an unknown name is an error on `tokenizer.ggml.pre` that
/// lists the supported names.
pub fn lookup(name: &str, path: &Path) -> Result<&'static PreTokenizer> {
    PRE_TOKENIZERS
        .iter()
        .find(|p| p.names.contains(&name))
        .ok_or_else(|| {
            Error::config(
                path,
                "tokenizer.ggml.pre",
                format!(
                    "pre-tokenizer `{name}` is not supported (supported: {})",
                    supported_names().join(", ")
                ),
            )
        })
}

impl PreTokenizer {
    /// The `tokenizers` pre-tokenizer: one isolating regex split per entry, then (for
    /// byte-level vocabularies) the byte-to-unicode mapping without GPT-2's own regex.
    pub fn build(&self) -> std::result::Result<PreTokenizerWrapper, String> {
        let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(self.regexes.len() + 1);
        for re in self.regexes {
            let split = Split::new(
                SplitPattern::Regex(re.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| format!("pre-tokenizer `{}` regex {re:?}: {e}", self.llama_type))?;
            steps.push(split.into());
        }
        if self.byte_level {
            steps.push(ByteLevel::new(false, true, false).into());
        }
        Ok(Sequence::new(steps).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer as _};

    /// The pieces a pre-tokenizer cuts `text` into, before the byte-level mapping.
    fn split(name: &str, text: &str) -> Vec<String> {
        let p = lookup(name, Path::new("t.gguf")).unwrap();
        let plain = PreTokenizer {
            byte_level: false,
            ..*p
        };
        let mut s = PreTokenizedString::from(text);
        plain.build().unwrap().pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(piece, _, _)| piece.to_string())
            .collect()
    }

    #[test]
    fn every_pre_tokenizer_regex_compiles() {
        for p in PRE_TOKENIZERS {
            p.build()
                .unwrap_or_else(|e| panic!("{}: {e}", p.llama_type));
        }
    }

    #[test]
    fn issue_names_are_all_supported() {
        let names = supported_names();
        for n in [
            "default",
            "gpt-2",
            "llama-bpe",
            "qwen2",
            "smollm",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "falcon",
            "mpt",
            "starcoder",
            "refact",
            "command-r",
            "olmo",
            "dbrx",
            "stablelm2",
            "tekken",
            "gpt-4o",
            "phi-2",
            "bloom",
            "chameleon",
            "exaone",
            "seed-coder",
        ] {
            assert!(names.contains(&n), "{n} missing");
        }
    }

    #[test]
    fn unknown_pre_tokenizer_names_the_key_and_the_choices() {
        let e = lookup("no-such-pre", Path::new("m.gguf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokenizer.ggml.pre"), "{e}");
        assert!(e.contains("no-such-pre"), "{e}");
        assert!(
            e.contains("smollm") && e.contains("qwen2") && e.contains("tekken"),
            "{e}"
        );
    }

    /// One short string per family, split as llama.cpp's regexes cut it.
    #[test]
    fn families_split_as_their_regexes_say() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "gpt-2",
                "Hello world's 12345!!",
                &["Hello", " world", "'s", " 12345", "!!"],
            ),
            (
                "llama-bpe",
                "Hello world's 12345!!",
                &["Hello", " world", "'s", " ", "123", "45", "!!"],
            ),
            ("qwen2", "ab 1234", &["ab", " ", "1", "2", "3", "4"]),
            ("smollm", "ab 12 x", &["ab", " ", "1", "2", " x"]),
            ("starcoder", "ab 12", &["ab", " ", "1", "2"]),
            ("falcon", "a+b 12345", &["a", "+", "b", " ", "123", "45"]),
            ("default", "a+b 12345", &["a", "+", "b", " ", "123", "45"]),
            (
                "deepseek-coder",
                "ab\ncd 12",
                &["ab", "\n", "cd", " ", "1", "2"],
            ),
            ("deepseek-llm", "ab 12", &["ab", " ", "12"]),
            (
                "deepseek-v3",
                "ab 12345 你好",
                &["ab", " ", "123", "45", " ", "你好"],
            ),
            ("bloom", "hi there.", &["hi", " there", "."]),
            ("chameleon", "a1\tb", &["a", "1", "\t", "b"]),
            (
                "gpt-4o",
                "HelloWorld 1234",
                &["Hello", "World", " ", "123", "4"],
            ),
            (
                "tekken",
                "HelloWorld 12",
                &["Hello", "World", " ", "1", "2"],
            ),
            ("seed-coder", "ab 12", &["ab", " ", "1", "2"]),
            ("command-r", "ab 12", &["ab", " ", "1", "2"]),
            ("exaone", "ab 12", &["ab", " ", "1", "2"]),
            ("tiny_aya", "1234567", &["1", "234", "567"]),
            ("gemma4", "a b\n\nc", &["a b", "\n\n", "c"]),
        ];
        for (name, text, want) in cases {
            assert_eq!(&split(name, text), want, "{name} on {text:?}");
        }
    }
}
