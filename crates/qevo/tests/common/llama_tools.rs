//! Finds llama.cpp's command-line tools, built by scripts/build_llama_tools.sh into
//! `$QEVO_LLAMA_TOOLS/bin` (default `~/.cache/qevo/llama-tools/bin`). Tests that compare with
//! llama.cpp call `llama_tool` and skip, with a printed reason, when it returns None.

use std::path::{Path, PathBuf};

/// The directory the tools are installed in (whether or not they are there).
pub fn llama_tools_dir() -> PathBuf {
    let root = match std::env::var_os("QEVO_LLAMA_TOOLS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/qevo/llama-tools"),
    };
    root.join("bin")
}

/// The path of one tool (`llama-tokenize`, `llama-perplexity`, `llama-quantize`,
/// `llama-imatrix`, `llama-gguf-split`), or None with a skip message naming `test`.
pub fn llama_tool(name: &str, test: &str) -> Option<PathBuf> {
    let path = llama_tools_dir().join(name);
    if path.is_file() {
        Some(path)
    } else {
        println!(
            "SKIP {test}: {} not found (run scripts/build_llama_tools.sh, or set QEVO_LLAMA_TOOLS)",
            path.display()
        );
        None
    }
}

/// Runs a llama.cpp tool, returning its stdout and stderr, or panics with its output.
pub fn run_tool(tool: &Path, args: &[&str]) -> String {
    let res = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        res.status.success(),
        "{} {args:?} failed:\n{stdout}\n{stderr}",
        tool.display()
    );
    stdout + &stderr
}

/// The logits file `llama-perplexity --kl-divergence-base` writes (tools/perplexity:
/// `_logits_`, n_ctx, n_vocab, n_chunk as i32, the chunks' tokens, then per scored
/// position `scale`, `min_log_prob` as f32 and one u16 code per vocabulary entry, padded
/// to even; log p = min_log_prob + scale·code). Read from the file rather than the log:
/// llama.cpp logs from a thread that may not have written its last lines at exit.
pub struct LlamaLogits {
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub tokens: Vec<u32>,
    /// Per scored position (the second half of each chunk, as llama.cpp scores), the
    /// log-probabilities of the whole vocabulary.
    pub logp: Vec<Vec<f64>>,
}

impl LlamaLogits {
    /// Runs `llama-perplexity` (`ppl`) on `gguf` over `chunks` chunks of `ctx` tokens of
    /// `text`, writing its log-probabilities to `out`, and reads them back.
    pub fn run(
        ppl: &Path,
        gguf: &Path,
        text: &Path,
        ctx: usize,
        chunks: usize,
        out: &Path,
    ) -> Self {
        let args = [
            "-m",
            gguf.to_str().unwrap(),
            "-f",
            text.to_str().unwrap(),
            "-c",
            &ctx.to_string(),
            "--chunks",
            &chunks.to_string(),
            "-t",
            "2",
            "--kl-divergence-base",
            out.to_str().unwrap(),
        ];
        run_tool(ppl, &args);
        Self::read(out)
    }

    pub fn read(path: &Path) -> LlamaLogits {
        let b = std::fs::read(path).unwrap();
        assert_eq!(&b[..8], b"_logits_", "{}", path.display());
        let i32_at = |o: usize| i32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
        let f32_at = |o: usize| f32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as f64;
        let (n_ctx, n_vocab, n_chunk) = (i32_at(8), i32_at(12), i32_at(16));
        let tokens: Vec<u32> = (0..n_chunk * n_ctx)
            .map(|i| i32_at(20 + 4 * i) as u32)
            .collect();
        let record = 2 * (2 * n_vocab.div_ceil(2) + 4);
        let scored = n_chunk * (n_ctx - 1 - n_ctx / 2);
        let start = 20 + 4 * tokens.len();
        assert_eq!(start + scored * record, b.len(), "{}: size", path.display());
        let logp = (0..scored)
            .map(|k| {
                let o = start + k * record;
                let (scale, min) = (f32_at(o), f32_at(o + 4));
                (0..n_vocab)
                    .map(|t| {
                        let code = u16::from_le_bytes([b[o + 8 + 2 * t], b[o + 9 + 2 * t]]);
                        min + scale * code as f64
                    })
                    .collect()
            })
            .collect();
        LlamaLogits {
            n_ctx,
            n_vocab,
            tokens,
            logp,
        }
    }

    /// The token each scored position predicts, in file order.
    fn targets(&self) -> impl Iterator<Item = usize> + '_ {
        let first = self.n_ctx / 2;
        let chunks = self.tokens.len() / self.n_ctx;
        (0..chunks).flat_map(move |c| {
            (first..self.n_ctx - 1).map(move |j| self.tokens[c * self.n_ctx + j + 1] as usize)
        })
    }

    pub fn perplexity(&self) -> f64 {
        let nll: f64 = self.targets().zip(&self.logp).map(|(t, row)| -row[t]).sum();
        (nll / self.logp.len() as f64).exp()
    }

    /// Mean KL(self ‖ q) over the scored positions, nats/token: `self` is the base model.
    pub fn kl_to(&self, q: &LlamaLogits) -> f64 {
        assert_eq!(
            self.tokens, q.tokens,
            "the two runs scored different tokens"
        );
        let total: f64 = self
            .logp
            .iter()
            .zip(&q.logp)
            .map(|(p, q)| {
                let (zp, zq) = (norm(p), norm(q));
                p.iter()
                    .zip(q)
                    .map(|(&lp, &lq)| (lp - zp).exp() * ((lp - zp) - (lq - zq)))
                    .sum::<f64>()
            })
            .sum();
        total / self.logp.len() as f64
    }
}

/// log Σ exp(row): the 16-bit codes leave rows a little off normalised.
fn norm(row: &[f64]) -> f64 {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + row.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
}
