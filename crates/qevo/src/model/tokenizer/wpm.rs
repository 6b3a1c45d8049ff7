//! WordPiece as llama.cpp runs it on `tokenizer.ggml.model = bert` vocabularies, whose
//! word-initial pieces carry a `▁` prefix and continuations none (llama.cpp's converter turns
//! BERT's `##x` into `x` and `x` into `▁x`).
//!
//! Written by hand because llama.cpp's normalisation differs from BERT's own: accents are
//! stripped by replacing each code point with the first of its decomposition, every
//! `\p{C}` code point is dropped, and words are matched greedily longest-first with no
//! word-length limit.

use super::vocab::Vocab;
use tokenizers::NormalizedString;
use unicode_categories::UnicodeCategories;

/// `\p{C}` less unassigned code points, which the categories crate does not list (and a
/// Rust `char` is never a surrogate).
fn is_control(c: char) -> bool {
    c.is_other_control() || c.is_other_format() || c.is_other_private_use()
}

fn is_mark(c: char) -> bool {
    c.is_mark_nonspacing() || c.is_mark_spacing_combining() || c.is_mark_enclosing()
}

/// The ranges BERT (and llama.cpp) treat as CJK ideographs, which become one-character words.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B920..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// The first code point of `c`'s canonical decomposition.
fn base_char(c: char) -> char {
    let mut s = NormalizedString::from(c.to_string());
    s.nfd();
    s.get().chars().next().unwrap_or(c)
}

fn lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// Splits text into words: whitespace separates, punctuation, ASCII symbols and CJK
/// ideographs stand alone.
fn words(vocab: &Vocab, text: &str) -> Vec<String> {
    let mut words = vec![String::new()];
    for c in text.chars() {
        let c = if vocab.strip_accents { base_char(c) } else { c };
        if c.is_whitespace() {
            if !words.last().is_some_and(String::is_empty) {
                words.push(String::new());
            }
            continue;
        }
        if c == '\0' || c == '\u{FFFD}' || is_control(c) || (vocab.strip_accents && is_mark(c)) {
            continue;
        }
        let out = if vocab.lowercase { lower(c) } else { c };
        if c.is_punctuation() || (c.is_ascii() && c.is_symbol()) || is_cjk(c) {
            if !words.last().is_some_and(String::is_empty) {
                words.push(String::new());
            }
            words.last_mut().expect("non-empty").push(out);
            words.push(String::new());
        } else {
            words.last_mut().expect("non-empty").push(out);
        }
    }
    words.retain(|w| !w.is_empty());
    words
}

/// Appends the tokens of `text` to `out`.
pub fn encode(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    for word in words(vocab, text) {
        let word = format!("\u{2581}{word}");
        let bytes = word.as_bytes();
        let first = out.len();
        let mut i = 0;
        while i < bytes.len() {
            let longest = (i + 1..=bytes.len().min(i + vocab.max_token_len))
                .rev()
                .find_map(|j| {
                    let piece = std::str::from_utf8(&bytes[i..j]).ok()?;
                    vocab.id(piece).map(|id| (j, id))
                });
            match longest {
                Some((j, id)) => {
                    out.push(id);
                    i = j;
                }
                None => {
                    out.truncate(first);
                    break;
                }
            }
        }
        if out.len() == first {
            out.extend(vocab.unk);
        }
    }
}
