//! Model loading and the forward pass: Hugging Face directories (config.json +
//! safetensors + tokenizer.json) and GGUF files become one `Model`, runnable block by
//! block with a hook at every linear layer's input. `Model::inspect` reads the same
//! files' headers only.
//!
//! Quantizable weights live in `Model::weights`, indexed like `Model::tensors`, as the
//! file stores them: safetensors and GGUF matrices are ranges of the memory-mapped file
//! (f32, f16, bf16 or GGML block bytes, `weight.rs`), decoded to f32 where they are used
//! (each product, `Model::weight_f32`): decoding is exact, so every reader sees the values
//! an all-f32 load gave. Every forward function takes the weight set to use as an
//! argument, so a quantized model is the same `Model` run with another set (no copy of
//! the rest of the network).

mod bert;
pub(crate) mod config;
mod fused;
pub mod gguf;
pub mod gguf_writer;
mod gpt2;
mod llama;
pub mod packed_st;
pub mod rope;
mod source;
pub mod synthetic;
pub mod tokenizer;
mod weight;

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};

pub(crate) use bert::hf_name as bert_hf_name;
pub use bert::BertConfig;
pub use config::ArchKind;
pub use gpt2::Gpt2Config;
pub(crate) use llama::{llama_cpp_attn_scale, llama_cpp_no_rope_layers};
pub(crate) use llama::{
    ties_by_default as llama_ties_by_default, BLOCK_ROLES as LLAMA_BLOCK_ROLES,
};
pub use llama::{Activation, LlamaConfig, Moe, QkNorm, WindowLayers};
pub use rope::{RopeScaling, RopeSpec};
use source::Read;
pub(crate) use source::{
    gguf_permutes_qk, llama_hf_name, permute_rows, raw_tensors, GGUF_ROPE_TENSORS,
};
pub(crate) use weight::{Encoding, Mapped, MappedFile};
pub use weight::{StoredWeights, Weight};

/// What a quantizable weight matrix does in the network; the unit of `--unit role`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Embedding,
    AttnQ,
    AttnK,
    AttnV,
    AttnOut,
    FfnGate,
    FfnUp,
    FfnDown,
    Output,
}

impl Role {
    pub const ALL: [Role; 9] = [
        Role::Embedding,
        Role::AttnQ,
        Role::AttnK,
        Role::AttnV,
        Role::AttnOut,
        Role::FfnGate,
        Role::FfnUp,
        Role::FfnDown,
        Role::Output,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Embedding => "embedding",
            Role::AttnQ => "attn_q",
            Role::AttnK => "attn_k",
            Role::AttnV => "attn_v",
            Role::AttnOut => "attn_out",
            Role::FfnGate => "ffn_gate",
            Role::FfnUp => "ffn_up",
            Role::FfnDown => "ffn_down",
            Role::Output => "output",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One quantizable weight matrix, stored row-major as `[rows, cols]` = `[out, in]`
/// (the embedding is `[vocab, hidden]`), so quantization blocks run along `cols`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TensorInfo {
    /// Stable name, equal to the GGUF tensor name (`blk.3.attn_q.weight`).
    pub name: String,
    pub role: Role,
    pub block: Option<usize>,
    pub rows: usize,
    pub cols: usize,
    /// A mixture-of-experts tensor: every expert's matrix of one block and role, stacked
    /// along the rows (llama.cpp's `ffn_*_exps`), as one tensor with one gene.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experts: Option<Experts>,
}

/// The experts stacked in one tensor: `total` matrices of `rows / total` rows each, of
/// which `used` run for each token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Experts {
    pub total: usize,
    pub used: usize,
}

impl TensorInfo {
    pub fn params(&self) -> usize {
        self.rows * self.cols
    }
    /// Multiply-accumulates per token; an embedding is a row gather and costs none; an
    /// expert tensor counts only the experts a token runs.
    pub fn macs_per_token(&self) -> usize {
        match (self.role, self.experts) {
            (Role::Embedding, _) => 0,
            (_, Some(e)) => self.rows / e.total * e.used * self.cols,
            _ => self.rows * self.cols,
        }
    }
}

/// The architecture and its hyper-parameters.
#[derive(Debug, Clone)]
// One per model, never in a collection: the rope and MoE settings' size costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Arch {
    Llama(LlamaConfig),
    Gpt2(Gpt2Config),
    Bert(BertConfig),
}

impl Arch {
    pub fn kind(&self) -> ArchKind {
        match self {
            Arch::Llama(c) => c.kind,
            Arch::Gpt2(_) => ArchKind::Gpt2,
            Arch::Bert(_) => ArchKind::Bert,
        }
    }
    pub fn n_blocks(&self) -> usize {
        match self {
            Arch::Llama(c) => c.n_layers,
            Arch::Gpt2(c) => c.n_layers,
            Arch::Bert(c) => c.n_layers,
        }
    }
    pub fn hidden(&self) -> usize {
        match self {
            Arch::Llama(c) => c.hidden,
            Arch::Gpt2(c) => c.hidden,
            Arch::Bert(c) => c.hidden,
        }
    }
    pub fn vocab(&self) -> usize {
        match self {
            Arch::Llama(c) => c.vocab,
            Arch::Gpt2(c) => c.vocab,
            Arch::Bert(c) => c.vocab,
        }
    }
    /// Longest window the position encoding allows.
    pub fn max_positions(&self) -> usize {
        match self {
            Arch::Llama(c) => c.max_positions,
            Arch::Gpt2(c) => c.max_positions,
            Arch::Bert(c) => c.max_positions,
        }
    }
    /// Query heads, key/value heads and the width of one head.
    pub fn attention(&self) -> AttentionDims {
        let mha = |n_heads: usize, hidden: usize| AttentionDims {
            n_heads,
            n_kv_heads: n_heads,
            head_dim: hidden / n_heads.max(1),
        };
        match self {
            Arch::Llama(c) => AttentionDims {
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: c.head_dim,
            },
            Arch::Gpt2(c) => mha(c.n_heads, c.hidden),
            Arch::Bert(c) => mha(c.n_heads, c.hidden),
        }
    }
    /// Decoders predict the next token; encoders produce pooled embeddings.
    pub fn is_decoder(&self) -> bool {
        !matches!(self, Arch::Bert(_))
    }
}

/// The attention shape the cost model and the KV-cache size need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDims {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// Sees (and may replace) the input of every linear layer: activation fake-quant and
/// calibration statistics hook in here. `tensor` indexes `Model::tensors`.
pub trait LinearHook: Sync {
    fn linear_input(&self, tensor: usize, x: &Tensor) -> Result<Tensor>;
}

/// The identity hook: full-precision activations.
pub struct NoHook;

impl LinearHook for NoHook {
    fn linear_input(&self, _tensor: usize, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
}

/// What a forward pass multiplies by. `Dense` holds f32 tensors (fake-quantized weights:
/// what the search scores); `Quantized` holds candle `QMatMul`s, so the same network runs
/// on real quantized kernels (used to time plans on this host).
pub trait Weights: Sync {
    /// `x2 [rows, in] @ W[idx]^T` → `[rows, out]`.
    fn matmul_t(&self, idx: usize, x2: &Tensor) -> Result<Tensor>;
    /// Tensor `idx` as a row table (embeddings); `embed_rows` widens the rows it gathers.
    fn table(&self, idx: usize) -> Result<Tensor>;
    /// Rows `ids` of tensor `idx` as f32 `[ids.len(), cols]` (the caller checked the ids):
    /// by default gathered from `table` before widening, so only those rows widen.
    fn gather(&self, idx: usize, ids: &[u32]) -> Result<Tensor> {
        let at = Tensor::from_slice(ids, ids.len(), &Device::Cpu)?;
        Ok(self
            .table(idx)?
            .index_select(&at, 0)?
            .to_dtype(DType::F32)?)
    }
    /// `x2 @ W[idx][start..start + len]^T` → `[rows, len]`: one expert of a stacked
    /// expert tensor. By default the whole product, narrowed.
    fn matmul_t_rows(&self, idx: usize, start: usize, len: usize, x2: &Tensor) -> Result<Tensor> {
        Ok(self.matmul_t(idx, x2)?.narrow(1, start, len)?)
    }
    /// Called before a block multiplies by `tensors`: a set that makes its weights on
    /// demand makes these now, together (in parallel), rather than one per product.
    fn prefetch(&self, _tensors: &[usize]) -> Result<()> {
        Ok(())
    }
}

/// Dense weights, indexed like `Model::tensors`: f32, or f16/bf16 as a model stores
/// them, widened to f32 for each product (exact, so the product is the f32 one).
pub struct Dense<'a>(pub &'a [Tensor]);

impl Weights for Dense<'_> {
    fn matmul_t(&self, idx: usize, x2: &Tensor) -> Result<Tensor> {
        Ok(x2.matmul(&widened(&self.0[idx])?.t()?)?)
    }
    /// The table as stored: gathering rows before widening them touches only the rows
    /// a window uses (`embed_rows` widens what it gathered).
    fn table(&self, idx: usize) -> Result<Tensor> {
        Ok(self.0[idx].clone())
    }
    fn matmul_t_rows(&self, idx: usize, start: usize, len: usize, x2: &Tensor) -> Result<Tensor> {
        Ok(x2.matmul(&widened(&self.0[idx].narrow(0, start, len)?)?.t()?)?)
    }
}

/// `w` as f32: the same tensor when it is already, an exact widening of f16/bf16.
pub fn widened(w: &Tensor) -> Result<Tensor> {
    Ok(w.to_dtype(DType::F32)?)
}

/// A weight set the whole-network entry points (`Model::forward`, `eval::Reference::score`)
/// take: a slice of tensors (checked against the model's shapes, then run as `Dense`) or
/// the model's own `StoredWeights`.
pub trait WeightSet {
    /// Runs `f` over these weights as a `Weights`.
    fn run<R>(&self, model: &Model, f: impl FnOnce(&dyn Weights) -> Result<R>) -> Result<R>;
}

impl WeightSet for [Tensor] {
    fn run<R>(&self, model: &Model, f: impl FnOnce(&dyn Weights) -> Result<R>) -> Result<R> {
        model.check_weights(self)?;
        f(&Dense(self))
    }
}

impl WeightSet for Vec<Tensor> {
    fn run<R>(&self, model: &Model, f: impl FnOnce(&dyn Weights) -> Result<R>) -> Result<R> {
        self.as_slice().run(model, f)
    }
}

impl WeightSet for StoredWeights {
    // Shapes were checked against the config when the model was loaded.
    fn run<R>(&self, _model: &Model, f: impl FnOnce(&dyn Weights) -> Result<R>) -> Result<R> {
        f(self)
    }
}

/// Quantized weights run by candle's quantized matmul kernels, with f32 copies of the
/// tensors that are gathered (embeddings).
pub struct Quantized {
    pub matmuls: Vec<candle_core::quantized::QMatMul>,
    pub tables: Vec<Option<Tensor>>,
}

impl Weights for Quantized {
    fn matmul_t(&self, idx: usize, x2: &Tensor) -> Result<Tensor> {
        use candle_core::Module;
        Ok(self.matmuls[idx].forward(x2)?)
    }
    fn table(&self, idx: usize) -> Result<Tensor> {
        self.tables
            .get(idx)
            .cloned()
            .flatten()
            .ok_or_else(|| Error::Invalid(format!("tensor #{idx} has no dequantized table")))
    }
}

/// Architecture-specific non-quantized parameters (norms, biases, positions).
#[derive(Debug)]
// One per model, never in a collection.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Net {
    Llama(llama::LlamaNet),
    Gpt2(gpt2::Gpt2Net),
    Bert(bert::BertNet),
}

/// How one quantizable weight is stored in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Stored {
    /// `f32`, `f16`, `bf16`, a GGML type name (`q4_k`), or `qevo-int` (qevo's packed
    /// safetensors, held decoded as f32).
    pub dtype: &'static str,
    /// Bytes in the file; a matrix cut from a fused one (Phi-3) gets its share.
    pub bytes: usize,
}

/// What `Model::inspect` reads from a model's headers, without its weights.
#[derive(Debug, Clone)]
pub struct ModelSummary {
    pub arch: Arch,
    pub tensors: Vec<TensorInfo>,
    /// Indexed like `tensors`.
    pub stored: Vec<Stored>,
    /// Parameters that are never quantized (norms, biases, position tables).
    pub aux_params: usize,
    pub tied_output: bool,
    pub source: PathBuf,
}

impl ModelSummary {
    /// Bytes of the quantizable weights as the file stores them.
    pub fn stored_bytes(&self) -> usize {
        self.stored.iter().map(|s| s.bytes).sum()
    }
}

/// A loaded model: architecture, quantizable tensors with their weights, the rest of the
/// network, and its tokenizer.
#[derive(Debug)]
pub struct Model {
    pub arch: Arch,
    pub tensors: Vec<TensorInfo>,
    /// `weights[i]` has shape `[tensors[i].rows, tensors[i].cols]`, as the file stores it
    /// (memory-mapped, or held in memory); read values through `weight_f32` /
    /// `weight_values`, or run the model with `weights` as a `Weights`.
    pub weights: StoredWeights,
    /// How each weight is stored in the file, indexed like `tensors`.
    pub stored: Vec<Stored>,
    pub tokenizer: Option<tokenizer::TextTokenizer>,
    pub source: PathBuf,
    /// Hex digest of the quantizable weights' bytes, recorded in every report.
    pub fingerprint: String,
    pub(crate) net: Net,
}

impl Model {
    /// Loads a Hugging Face model directory or a `.gguf` file.
    pub fn load(path: &Path) -> Result<Model> {
        Self::read(path, Read::Weights)
    }

    /// The architecture and the tensor table from a model's headers: config, safetensors
    /// headers or GGUF tensor infos, and the tokenizer, checked as `load` checks them,
    /// without reading (or holding) any weight. NaN/Inf weights are found only by `load`.
    pub fn inspect(path: &Path) -> Result<ModelSummary> {
        let m = Self::read(path, Read::Headers)?;
        Ok(ModelSummary {
            aux_params: m.aux_params(),
            tied_output: m.tied_output(),
            arch: m.arch,
            tensors: m.tensors,
            stored: m.stored,
            source: m.source,
        })
    }

    fn read(path: &Path, read: Read) -> Result<Model> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return source::load_hf_dir(path, read);
        }
        crate::fsutil::check_regular_file(path)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".safetensors") || name.ends_with(".json") {
            return Err(Error::format(
                path,
                "a Hugging Face model is loaded from its directory (the folder with config.json), \
                 not from one of its files; pass the directory, or a .gguf file",
            ));
        }
        source::load_gguf(path, read)
    }

    /// Weight `i` as f32 (a widened copy when it is stored in 16 bits).
    pub fn weight_f32(&self, i: usize) -> Result<Tensor> {
        self.weights.get(i)?.f32()
    }

    /// Weight `i`'s f32 values, row-major: what quantizers, export and tune read.
    pub fn weight_values(&self, i: usize) -> Result<Vec<f32>> {
        self.weights.get(i)?.values()
    }

    /// Bytes the quantizable weights take as stored (mapped or held).
    pub fn weight_bytes(&self) -> usize {
        self.weights.iter().map(Weight::stored_bytes).sum()
    }

    /// Bytes of the quantizable weights held in memory (mapped ones are not).
    pub fn held_weight_bytes(&self) -> usize {
        self.weights.held_bytes()
    }

    pub fn device(&self) -> &Device {
        &Device::Cpu
    }

    /// Parameters that are never quantized (norms, biases, position tables).
    pub fn aux_params(&self) -> usize {
        match &self.net {
            Net::Llama(n) => n.aux_params(),
            Net::Gpt2(n) => n.aux_params(),
            Net::Bert(n) => n.aux_params(),
        }
    }

    /// Llama family only: the non-quantized tensors (norms, biases) by canonical GGUF
    /// name, as f32; `None` for other architectures.
    pub(crate) fn llama_aux_tensors(&self) -> Option<Vec<(String, Tensor)>> {
        match &self.net {
            Net::Llama(n) => Some(n.aux_tensors()),
            _ => None,
        }
    }

    /// Llama family only: a copy (sharing the weights, without the tokenizer) whose norms
    /// and biases are `aux`, in `llama_aux_tensors` order; with `autograd` its forward
    /// pass uses only ops candle can differentiate (what `tune` trains through).
    pub(crate) fn with_llama_aux(&self, aux: &[Tensor], autograd: bool) -> Result<Model> {
        let Net::Llama(n) = &self.net else {
            return Err(Error::unsupported(
                format!(
                    "{}: replacing the norms of a {} model",
                    self.source.display(),
                    self.arch.kind().as_str()
                ),
                "only the Llama family's norms can be replaced",
            ));
        };
        Ok(Model {
            arch: self.arch.clone(),
            tensors: self.tensors.clone(),
            weights: self.weights.clone(),
            stored: self.stored.clone(),
            tokenizer: None,
            source: self.source.clone(),
            fingerprint: self.fingerprint.clone(),
            net: Net::Llama(n.with_aux(aux, autograd)?),
        })
    }

    pub fn n_blocks(&self) -> usize {
        self.arch.n_blocks()
    }

    /// Whether the output projection reuses the embedding matrix (no separate tensor).
    pub fn tied_output(&self) -> bool {
        match &self.net {
            Net::Llama(n) => n.tied_output(),
            Net::Gpt2(_) => true,
            Net::Bert(_) => false,
        }
    }

    /// Token ids `[batch, seq]` (u32) → hidden states `[batch, seq, hidden]`.
    pub fn embed<W: WeightSet + ?Sized>(&self, w: &W, ids: &Tensor) -> Result<Tensor> {
        w.run(self, |w| self.embed_with(w, ids))
    }

    /// `embed` over any weight set.
    pub fn embed_with(&self, w: &dyn Weights, ids: &Tensor) -> Result<Tensor> {
        match &self.net {
            Net::Llama(n) => n.embed(w, ids),
            Net::Gpt2(n) => n.embed(w, ids),
            Net::Bert(n) => n.embed(w, ids),
        }
    }

    /// Runs transformer block `i` on hidden states `[batch, seq, hidden]`.
    pub fn block<W: WeightSet + ?Sized>(
        &self,
        i: usize,
        w: &W,
        hook: &dyn LinearHook,
        h: &Tensor,
    ) -> Result<Tensor> {
        w.run(self, |w| self.block_with(i, w, hook, h))
    }

    /// `block` over any weight set.
    pub fn block_with(
        &self,
        i: usize,
        w: &dyn Weights,
        hook: &dyn LinearHook,
        h: &Tensor,
    ) -> Result<Tensor> {
        match &self.net {
            Net::Llama(n) => n.block(i, w, hook, h),
            Net::Gpt2(n) => n.block(i, w, hook, h),
            Net::Bert(n) => n.block(i, w, hook, h),
        }
    }

    /// Decoders: logits `[batch, seq, vocab]`. Encoders: mean-pooled embeddings `[batch, hidden]`.
    pub fn head<W: WeightSet + ?Sized>(
        &self,
        w: &W,
        hook: &dyn LinearHook,
        h: &Tensor,
    ) -> Result<Tensor> {
        w.run(self, |w| self.head_with(w, hook, h))
    }

    /// `head` over any weight set.
    pub fn head_with(&self, w: &dyn Weights, hook: &dyn LinearHook, h: &Tensor) -> Result<Tensor> {
        match &self.net {
            Net::Llama(n) => n.head(w, hook, h, None),
            Net::Gpt2(n) => n.head(w, hook, h, None),
            Net::Bert(n) => n.head(h),
        }
    }

    /// A decoder's head at vocabulary rows `ids` only (`eval::head`'s sampled scores):
    /// `[positions, ids.len()]` for states `[.., hidden]`, the same values as those
    /// columns of `head_with`'s logits.
    pub fn head_rows(
        &self,
        w: &dyn Weights,
        hook: &dyn LinearHook,
        h: &Tensor,
        ids: &[u32],
    ) -> Result<Tensor> {
        match &self.net {
            Net::Llama(n) => n.head(w, hook, h, Some(ids)),
            Net::Gpt2(n) => n.head(w, hook, h, Some(ids)),
            Net::Bert(_) => Err(Error::Invalid(
                "an encoder has no vocabulary head to score rows of".into(),
            )),
        }
    }

    /// The whole network: embed → every block → head.
    pub fn forward<W: WeightSet + ?Sized>(
        &self,
        w: &W,
        hook: &dyn LinearHook,
        ids: &Tensor,
    ) -> Result<Tensor> {
        w.run(self, |w| self.forward_with(w, hook, ids))
    }

    /// The whole network over any weight set (e.g. `Quantized` kernels).
    pub fn forward_with(
        &self,
        w: &dyn Weights,
        hook: &dyn LinearHook,
        ids: &Tensor,
    ) -> Result<Tensor> {
        let mut h = self.embed_with(w, ids)?;
        for i in 0..self.n_blocks() {
            h = self.block_with(i, w, hook, &h)?;
        }
        self.head_with(w, hook, &h)
    }

    /// A weight slice built elsewhere must line up with this model's tensors.
    pub fn check_weights(&self, w: &[Tensor]) -> Result<()> {
        if w.len() != self.tensors.len() {
            return Err(Error::tensor_count(
                "weight set",
                w.len(),
                self.tensors.len(),
            ));
        }
        for (t, info) in w.iter().zip(&self.tensors) {
            if t.dims() != [info.rows, info.cols] {
                return Err(Error::Shape {
                    what: format!("weight `{}`", info.name),
                    got: t.dims().to_vec(),
                    expected: vec![info.rows, info.cols],
                });
            }
        }
        Ok(())
    }

    /// Indices of block `b`'s quantizable tensors.
    pub fn block_tensors(&self, b: usize) -> Vec<usize> {
        (0..self.tensors.len())
            .filter(|&i| self.tensors[i].block == Some(b))
            .collect()
    }

    /// Index of the tensor with this name.
    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// Encodes text with the model's tokenizer (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let tok = self.tokenizer.as_ref().ok_or_else(|| {
            Error::Tokenizer(format!("{} has no tokenizer", self.source.display()))
        })?;
        tok.encode(text, false)
    }

    /// Token ids of `text` with the special tokens the tokenizer adds around a sequence
    /// (`[CLS] … [SEP]` for BERT).
    pub fn encode_special(&self, text: &str) -> Result<Vec<u32>> {
        let tok = self.tokenizer.as_ref().ok_or_else(|| {
            Error::Tokenizer(format!("{} has no tokenizer", self.source.display()))
        })?;
        tok.encode(text, true)
    }
}

/// A decoder head's product (no bias): `linear` by output tensor `idx`, or, given
/// `rows`, by those vocabulary rows only (`[positions, rows.len()]`, the inputs flattened
/// to positions; only those rows of the weight are gathered).
pub(crate) fn head_product(
    x: &Tensor,
    w: &dyn Weights,
    idx: usize,
    rows: Option<&[u32]>,
    hook: &dyn LinearHook,
) -> Result<Tensor> {
    let Some(ids) = rows else {
        return linear(x, w, idx, None, hook);
    };
    let x = hook.linear_input(idx, x)?;
    let last = x.dim(x.rank().saturating_sub(1))?;
    let x2 = x.reshape((x.elem_count() / last.max(1), last))?;
    Ok(x2.matmul(&w.gather(idx, ids)?.t()?)?)
}

/// Linear layer: hook, then `x @ w^T (+ b)`, with x flattened to 2-D so the product is
/// one large GEMM.
pub(crate) fn linear(
    x: &Tensor,
    w: &dyn Weights,
    idx: usize,
    bias: Option<&Tensor>,
    hook: &dyn LinearHook,
) -> Result<Tensor> {
    let x = hook.linear_input(idx, x)?;
    let dims = x.dims().to_vec();
    let (last, lead) = dims
        .split_last()
        .ok_or_else(|| Error::Invalid("linear layer input is a scalar".into()))?;
    let rows: usize = lead.iter().product();
    let x2 = x.reshape((rows, *last))?;
    let mut y = w.matmul_t(idx, &x2)?;
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    let mut out_dims = lead.to_vec();
    out_dims.push(y.dim(1)?);
    Ok(y.reshape(out_dims)?)
}
