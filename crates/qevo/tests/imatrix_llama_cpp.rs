//! qevo's importance matrix equals llama-imatrix's on the same tokens, and llama.cpp reads
//! the file qevo writes:
//! - the checked-in fixture (`llama-imatrix --process-output -c 128 --chunks 16` on
//!   assets/calib.txt, scripts/make_ggml_fixtures.py) against `collect_imatrix_llama_cpp`
//!   on the embedded model — runs without llama.cpp;
//! - a live `llama-imatrix` run on the embedded model exported as f32 GGUF, and its legacy
//!   `.dat` output read to the same values;
//! - `llama-quantize --imatrix` on the file qevo wrote gives the bytes qevo's own export
//!   writes with that file.
//!
//! The live tests skip when llama.cpp's tools are absent.

mod common;

use common::llama_tools::{llama_tool, run_tool};
use qevo::calib::{collect_imatrix_llama_cpp, Imatrix};
use qevo::export::export_gguf;
use qevo::model::gguf::Gguf;
use qevo::model::Model;
use qevo::plan::resolve_ggml;
use qevo::plan::TensorPlan;
use qevo::quant::RoundingInputs;
use qevo::quant::{GgmlType, WeightFormat};
use std::path::Path;

/// Relative tolerance on each column's sum: llama.cpp sums in f32 with its own matmul
/// inputs, qevo in f64 with candle's.
const TOL: f64 = 1e-3;

/// Largest and mean relative difference of the column sums, after checking that both
/// hold the same tensors with the same token counts.
fn rel_diff(ours: &Imatrix, theirs: &Imatrix) -> (f64, f64) {
    let names = |m: &Imatrix| m.entries.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(ours), names(theirs), "tensors collected");
    let (mut worst, mut total, mut n) = (0f64, 0f64, 0usize);
    for (name, t) in &theirs.entries {
        let o = &ours.entries[name];
        assert_eq!(o.count, t.count, "{name}: tokens counted");
        assert_eq!(o.sums.len(), t.sums.len(), "{name}: columns");
        for (a, b) in o.sums.iter().zip(&t.sums) {
            let d = (*a as f64 - *b as f64).abs() / (*b as f64).abs().max(1e-6);
            worst = worst.max(d);
            total += d;
            n += 1;
        }
    }
    (worst, total / n.max(1) as f64)
}

#[test]
fn collected_imatrix_matches_the_llama_imatrix_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::load(&qevo::assets::default_model_dir(dir.path()).unwrap()).unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ggml_quants/imatrix.gguf");
    let theirs = Imatrix::read(&fixture).unwrap();
    let ours = collect_imatrix_llama_cpp(&m, qevo::assets::CALIB_TEXT, 128, Some(16)).unwrap();
    let (d, mean) = rel_diff(&ours, &theirs);
    println!(
        "fixture: {} tensors, relative difference max {d:.3e}, mean {mean:.3e}",
        theirs.entries.len()
    );
    assert!(d <= TOL, "max relative difference {d}");
    assert_eq!((ours.chunk_count, ours.chunk_size), (16, 128));
}

/// The embedded model exported at f32, and the same file loaded back (its GGUF tokenizer
/// gives llama.cpp's token ids).
fn f32_gguf(dir: &Path) -> (Model, std::path::PathBuf) {
    let m = Model::load(&qevo::assets::default_model_dir(dir).unwrap()).unwrap();
    let path = dir.join("f32.gguf");
    let plan = TensorPlan::uniform(&m, WeightFormat::Ggml(GgmlType::F32), 16).unwrap();
    export_gguf(
        &m,
        &resolve_ggml(&m, &plan, false).unwrap(),
        &RoundingInputs::default(),
        &path,
    )
    .unwrap();
    (Model::load(&path).unwrap(), path)
}

#[test]
fn collected_imatrix_matches_llama_imatrix_live() {
    let Some(tool) = llama_tool("llama-imatrix", "imatrix vs llama-imatrix") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (m, gguf) = f32_gguf(dir.path());
    let text = dir.path().join("heldout.txt");
    std::fs::write(&text, qevo::assets::HELDOUT_TEXT).unwrap();
    let out = dir.path().join("llama.imatrix.gguf");
    let (ctx, chunks) = (64, 6);
    let args = [
        "-m",
        gguf.to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-c",
        &ctx.to_string(),
        "-b",
        &ctx.to_string(),
        "--chunks",
        &chunks.to_string(),
        "-t",
        "2",
        "--no-ppl",
        "--process-output",
    ];
    run_tool(&tool, &args);
    let theirs = Imatrix::read(&out).unwrap();
    let ours =
        collect_imatrix_llama_cpp(&m, qevo::assets::HELDOUT_TEXT, ctx, Some(chunks)).unwrap();
    let (d, mean) = rel_diff(&ours, &theirs);
    println!(
        "llama-imatrix -c {ctx} --chunks {chunks}: {} tensors, relative difference max {d:.3e}, mean {mean:.3e}",
        theirs.entries.len()
    );
    assert!(d <= TOL, "max relative difference {d}");
    // The legacy .dat of the same run gives the quantizers the same values (to f32
    // rounding: it stores mean · ncall).
    let dat = dir.path().join("llama.imatrix.dat");
    let mut legacy_args = args.to_vec();
    legacy_args[5] = dat.to_str().unwrap();
    legacy_args.extend(["--output-format", "dat"]);
    run_tool(&tool, &legacy_args);
    let (g, l) = (
        theirs.for_model(&m).unwrap(),
        Imatrix::read(&dat).unwrap().for_model(&m).unwrap(),
    );
    for (i, (a, b)) in g.iter().zip(&l).enumerate() {
        let (a, b) = (a.as_deref().unwrap_or(&[]), b.as_deref().unwrap_or(&[]));
        assert_eq!(a.len(), b.len(), "{}", m.tensors[i].name);
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1e-6),
                "{}: {x} vs {y}",
                m.tensors[i].name
            );
        }
    }
}

#[test]
fn llama_quantize_takes_qevos_imatrix_and_writes_qevos_bytes() {
    let Some(tool) = llama_tool("llama-quantize", "llama-quantize --imatrix of qevo's file") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (m, gguf) = f32_gguf(dir.path());
    let im_path = dir.path().join("qevo.imatrix.gguf");
    let mut im = collect_imatrix_llama_cpp(&m, qevo::assets::CALIB_TEXT, 128, Some(8)).unwrap();
    im.datasets = vec!["calib.txt".into()];
    im.write_gguf(&im_path).unwrap();
    let theirs = dir.path().join("llama-q4_k.gguf");
    let args = [
        "--pure",
        "--imatrix",
        im_path.to_str().unwrap(),
        gguf.to_str().unwrap(),
        theirs.to_str().unwrap(),
        "Q4_K",
        "2",
    ];
    let log = run_tool(&tool, &args);
    assert!(log.contains("importance matrix entries"), "{log}");
    // qevo's export of the same plan with the same file.
    let ours = dir.path().join("qevo-q4_k.gguf");
    let plan = TensorPlan::uniform(&m, WeightFormat::Ggml(GgmlType::Q4K), 16).unwrap();
    let weights = Imatrix::read(&im_path).unwrap().for_model(&m).unwrap();
    export_gguf(
        &m,
        &resolve_ggml(&m, &plan, false).unwrap(),
        &RoundingInputs::imatrix(weights),
        &ours,
    )
    .unwrap();
    let (a, b) = (Gguf::open(&ours).unwrap(), Gguf::open(&theirs).unwrap());
    // Matrices only: norms stay f32 in both.
    let mut compared = 0;
    for t in a.tensors.iter().filter(|t| t.type_id != 0) {
        let u = b.tensor(&t.name).unwrap();
        assert_eq!(t.type_id, u.type_id, "{}: type", t.name);
        assert!(
            a.tensor_bytes(t) == b.tensor_bytes(u),
            "{}: bytes differ",
            t.name
        );
        compared += 1;
    }
    println!("{compared} q4_k tensors byte-identical with llama-quantize --imatrix");
    assert!(compared > 0);
}

#[test]
fn an_imatrix_for_another_model_is_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::load(&qevo::assets::default_model_dir(dir.path()).unwrap()).unwrap();
    let mut im = collect_imatrix_llama_cpp(&m, qevo::assets::CALIB_TEXT, 64, Some(1)).unwrap();
    let e = im.entries.remove("blk.0.attn_q.weight").unwrap();
    im.entries.insert("blk.9.attn_q.weight".into(), e.clone());
    let err = im.for_model(&m).unwrap_err().to_string();
    assert!(
        err.contains("blk.9.attn_q.weight") && err.contains("another model"),
        "{err}"
    );
    im.entries.remove("blk.9.attn_q.weight");
    let mut short = e;
    short.sums.pop();
    im.entries.insert("blk.0.attn_q.weight".into(), short);
    let err = im.for_model(&m).unwrap_err().to_string();
    assert!(
        err.contains("blk.0.attn_q.weight") && err.contains("255 columns"),
        "{err}"
    );
}

#[test]
fn a_written_imatrix_gives_the_quantizers_the_same_values_back() {
    // What a search scores with (in memory) and what `qevo export --imatrix-file` reads
    // from the search's imatrix.gguf must be the same, or the exported bytes differ.
    let dir = tempfile::tempdir().unwrap();
    let m = Model::load(&qevo::assets::default_model_dir(dir.path()).unwrap()).unwrap();
    let im = collect_imatrix_llama_cpp(&m, qevo::assets::CALIB_TEXT, 64, Some(2)).unwrap();
    let path = dir.path().join("im.gguf");
    im.write_gguf(&path).unwrap();
    let back = Imatrix::read(&path).unwrap();
    assert_eq!(back.for_model(&m).unwrap(), im.for_model(&m).unwrap());
    assert_eq!(back.fingerprint(), im.fingerprint());
}
