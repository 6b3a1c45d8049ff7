//! SentencePiece BPE as llama.cpp runs it on `tokenizer.ggml.model = llama` vocabularies
//! (Llama-2, Gemma): start from single characters, repeatedly merge the adjacent pair whose
//! joined text is the highest-scoring token (leftmost on ties), then emit each symbol as its
//! token, or undo merges that produced a non-token, or fall back to `<0xXX>` byte tokens.
//!
//! Written by hand because the `tokenizers` crate's BPE ranks merges by a merge list: one
//! token reachable through several splits gets several ranks there, one score here, so the
//! two disagree on ties.

use super::vocab::Vocab;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// A live symbol: a byte range of the text, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of symbols `left` and `right`, whose joined text was `size` bytes.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

struct Session<'a> {
    vocab: &'a Vocab,
    text: &'a str,
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Bigram>,
    /// How each merged text was formed (the latest pair that formed it).
    formed_by: HashMap<&'a str, (usize, usize)>,
}

impl<'a> Session<'a> {
    fn try_pair(&mut self, left: Option<usize>, right: Option<usize>) {
        let (Some(l), Some(r)) = (left, right) else {
            return;
        };
        let (a, b) = (self.symbols[l], self.symbols[r]);
        let joined = &self.text[a.start..a.start + a.len + b.len];
        let Some(id) = self.vocab.id(joined) else {
            return;
        };
        self.queue.push(Bigram {
            left: l,
            right: r,
            score: self.vocab.scores[id as usize],
            size: joined.len(),
        });
        self.formed_by.insert(joined, (l, r));
    }

    fn emit(&self, sym: usize, out: &mut Vec<u32>) {
        let s = self.symbols[sym];
        let piece = &self.text[s.start..s.start + s.len];
        if let Some(id) = self.vocab.id(piece) {
            out.push(id);
        } else if let Some(&(l, r)) = self.formed_by.get(piece) {
            self.emit(l, out);
            self.emit(r, out);
        } else {
            out.extend(piece.bytes().filter_map(|b| byte_token(self.vocab, b)));
        }
    }
}

/// The token for one raw byte: `<0xXX>`, or else a token whose text is that byte.
pub(super) fn byte_token(vocab: &Vocab, b: u8) -> Option<u32> {
    vocab
        .id(&format!("<0x{b:02X}>"))
        .or_else(|| std::str::from_utf8(&[b]).ok().and_then(|s| vocab.id(s)))
        .or(vocab.unk)
}

/// Appends the tokens of `text` (already space-escaped) to `out`.
pub fn encode(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (i, (start, c)) in text.char_indices().enumerate() {
        let len = c.len_utf8();
        symbols.push(Symbol {
            start,
            len,
            prev: i.checked_sub(1),
            next: (start + len < text.len()).then_some(i + 1),
        });
    }
    if symbols.is_empty() {
        return;
    }
    let mut s = Session {
        vocab,
        text,
        symbols,
        queue: BinaryHeap::new(),
        formed_by: HashMap::new(),
    };
    for i in 1..s.symbols.len() {
        s.try_pair(Some(i - 1), Some(i));
    }
    while let Some(bg) = s.queue.pop() {
        let (l, r) = (s.symbols[bg.left], s.symbols[bg.right]);
        // A pair is stale once either side has been merged into something else.
        if l.len == 0 || r.len == 0 || l.len + r.len != bg.size {
            continue;
        }
        s.symbols[bg.left].len += r.len;
        s.symbols[bg.left].next = r.next;
        s.symbols[bg.right].len = 0;
        if let Some(n) = r.next {
            s.symbols[n].prev = Some(bg.left);
        }
        let merged = s.symbols[bg.left];
        s.try_pair(merged.prev, Some(bg.left));
        s.try_pair(Some(bg.left), merged.next);
    }
    let mut at = Some(0);
    while let Some(i) = at {
        s.emit(i, out);
        at = s.symbols[i].next;
    }
}
