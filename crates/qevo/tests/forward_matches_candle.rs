//! The forward pass against an independent implementation: candle-transformers' llama,
//! qwen2 and bert on random-weight models (GQA, tied/untied, q/k/v bias), ≤ 1e-4 relative.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use common::*;
use qevo::model::{Model, NoHook};

fn ids(vocab: usize, t: usize) -> Vec<u32> {
    (0..t).map(|i| ((i * 37 + 11) % vocab) as u32).collect()
}

fn ours_last_logits(m: &Model, ids: &[u32]) -> Vec<f32> {
    let x = Tensor::from_slice(ids, (1, ids.len()), &Device::Cpu).unwrap();
    let logits = m.forward(&m.weights, &NoHook, &x).unwrap();
    logits
        .i((0, ids.len() - 1))
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn check_llama(o: LlamaOpts) {
    let dir = tempfile::tempdir().unwrap();
    write_llama_dir(dir.path(), &o, 7);
    let m = Model::load(dir.path()).unwrap();
    let cfg: candle_transformers::models::llama::LlamaConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    let cfg = cfg.into_config(false);
    let files = [dir.path().join("model.safetensors")];
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu).unwrap() };
    let theirs = candle_transformers::models::llama::Llama::load(vb, &cfg).unwrap();
    for t in [1, 5, 17] {
        let seq = ids(o.vocab, t);
        let mut cache =
            candle_transformers::models::llama::Cache::new(false, DType::F32, &cfg, &Device::Cpu)
                .unwrap();
        let x = Tensor::from_slice(&seq, (1, t), &Device::Cpu).unwrap();
        let want = theirs
            .forward(&x, 0, &mut cache)
            .unwrap()
            .i(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = ours_last_logits(&m, &seq);
        let err = rel_err(&got, &want);
        assert!(err <= 1e-4, "{o:?} t={t}: relative error {err}");
    }
}

#[test]
fn llama_gqa_untied_logits_match_candle_transformers() {
    check_llama(LlamaOpts::default());
}

#[test]
fn llama_tied_mha_logits_match_candle_transformers() {
    check_llama(LlamaOpts {
        tie: true,
        kv_heads: 4,
        ..Default::default()
    });
}

#[test]
fn qwen2_qkv_bias_logits_match_candle_transformers() {
    let o = LlamaOpts {
        arch: "Qwen2ForCausalLM",
        qkv_bias: true,
        tie: true,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    write_llama_dir(dir.path(), &o, 11);
    let m = Model::load(dir.path()).unwrap();
    let cfg: candle_transformers::models::qwen2::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    let files = [dir.path().join("model.safetensors")];
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu).unwrap() };
    let mut theirs = candle_transformers::models::qwen2::ModelForCausalLM::new(&cfg, vb).unwrap();
    for t in [3, 16] {
        theirs.clear_kv_cache();
        let seq = ids(o.vocab, t);
        let x = Tensor::from_slice(&seq, (1, t), &Device::Cpu).unwrap();
        let want = theirs
            .forward(&x, 0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = ours_last_logits(&m, &seq);
        let err = rel_err(&got, &want);
        assert!(err <= 1e-4, "qwen2 t={t}: relative error {err}");
    }
}

#[test]
fn bert_mean_pooled_embeddings_match_candle_transformers() {
    let dir = tempfile::tempdir().unwrap();
    write_bert_dir(dir.path(), 5);
    let m = Model::load(dir.path()).unwrap();
    let cfg: candle_transformers::models::bert::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    let files = [dir.path().join("model.safetensors")];
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu).unwrap() };
    let theirs = candle_transformers::models::bert::BertModel::load(vb, &cfg).unwrap();
    let seq = ids(80, 13);
    let x = Tensor::from_slice(&seq, (1, 13), &Device::Cpu).unwrap();
    let tt = x.zeros_like().unwrap();
    let hidden = theirs.forward(&x, &tt, None).unwrap();
    let want = hidden
        .mean(1)
        .unwrap()
        .i(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let got = m
        .forward(&m.weights, &NoHook, &x)
        .unwrap()
        .i(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let err = rel_err(&got, &want);
    assert!(err <= 1e-4, "bert: relative error {err}");
}

#[test]
fn batched_windows_equal_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    write_llama_dir(dir.path(), &LlamaOpts::default(), 3);
    let m = Model::load(dir.path()).unwrap();
    let a = ids(96, 10);
    let b: Vec<u32> = a.iter().map(|x| (x + 5) % 96).collect();
    let both: Vec<u32> = a.iter().chain(&b).copied().collect();
    let x = Tensor::from_slice(&both, (2, 10), &Device::Cpu).unwrap();
    let batched = m.forward(&m.weights, &NoHook, &x).unwrap();
    for (i, s) in [a, b].iter().enumerate() {
        let one = m
            .forward(
                &m.weights,
                &NoHook,
                &Tensor::from_slice(s, (1, 10), &Device::Cpu).unwrap(),
            )
            .unwrap();
        let e = rel_err(
            &batched
                .i(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            &one.i(0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
        assert!(e < 1e-5, "window {i}: {e}");
    }
}

#[test]
fn quantized_kernel_weights_at_f32_match_dense_forward() {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use qevo::model::Quantized;
    let dir = tempfile::tempdir().unwrap();
    write_llama_dir(dir.path(), &LlamaOpts::default(), 9);
    let m = Model::load(dir.path()).unwrap();
    let mut matmuls = Vec::new();
    let mut tables = Vec::new();
    for (w, info) in m.weights.iter().zip(&m.tensors) {
        let q = QTensor::quantize(&w.tensor().unwrap(), GgmlDType::F32).unwrap();
        tables.push(
            (info.role == qevo::Role::Embedding).then(|| q.dequantize(&Device::Cpu).unwrap()),
        );
        matmuls.push(QMatMul::from_qtensor(q).unwrap());
    }
    let qw = Quantized { matmuls, tables };
    let seq = ids(96, 12);
    let x = Tensor::from_slice(&seq, (1, 12), &Device::Cpu).unwrap();
    let dense = m
        .forward(&m.weights, &NoHook, &x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let quant = m
        .forward_with(&qw, &NoHook, &x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let err = rel_err(&quant, &dense);
    assert!(err <= 1e-5, "relative error {err}");
}
