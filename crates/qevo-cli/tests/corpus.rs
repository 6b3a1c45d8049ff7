//! The malformed-input corpus: every kind of file the CLI reads (model directories,
//! config.json, safetensors headers, tokenizer.json, GGUF, texts, plans in JSON and
//! YAML, profiles, imatrix files, checkpoints), each broken in the ways probing found or
//! a hostile user would try. The cases are generated here from the committed tiny
//! fixtures, so the corpus is the code below. Every case must end with a documented
//! non-zero exit code, no panic or abort, a message naming the file (and where it
//! applies the key or tensor), within 5 seconds.

mod common;

use common::{qevo, text};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../qevo/tests/fixtures")
        .join(p)
}

/// One malformed input: the command to run on it and what its error must name.
struct Case {
    name: String,
    args: Vec<String>,
    names: Vec<String>,
}

/// A copy of the tiny llama HF fixture at `dir/name`, with `edit` applied to its files.
fn model_dir(root: &Path, name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("tiny_llama").join(f), d.join(f)).unwrap();
    }
    edit(&d);
    d
}

fn config_with(d: &Path, key: &str, value: serde_json::Value) {
    let p = d.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    match value {
        serde_json::Value::Null => {
            c.as_object_mut().unwrap().remove(key);
        }
        v => c[key] = v,
    }
    std::fs::write(p, c.to_string()).unwrap();
}

fn s(v: &str) -> String {
    v.to_string()
}

fn inspect(name: &str, path: &Path, names: &[&str]) -> Case {
    Case {
        name: name.into(),
        args: vec![s("inspect"), path.display().to_string()],
        names: names.iter().map(|n| s(n)).collect(),
    }
}

/// Model directories: config.json keys, safetensors headers, tokenizer.json.
fn model_cases(root: &Path) -> Vec<Case> {
    use serde_json::json;
    let mut out = Vec::new();
    let config_edits: [(&str, serde_json::Value); 12] = [
        ("num_hidden_layers", json!(1_000_000_000u64)),
        ("num_hidden_layers", json!(4_294_967_295u64)),
        ("num_hidden_layers", json!(-1)),
        ("num_hidden_layers", json!("four")),
        ("hidden_size", serde_json::Value::Null),
        ("hidden_size", json!(0)),
        ("num_attention_heads", json!(0)),
        ("num_attention_heads", json!(7)),
        ("vocab_size", json!(1u64 << 40)),
        ("intermediate_size", json!(1e300)),
        ("architectures", json!(["NoSuchForCausalLM"])),
        ("max_position_embeddings", json!(-5)),
    ];
    for (i, (key, v)) in config_edits.into_iter().enumerate() {
        let d = model_dir(root, &format!("cfg{i}"), |d| config_with(d, key, v));
        // A count the weights contradict is reported against the weights file, quoting
        // the config's value.
        out.push(inspect(&format!("config {key} #{i}"), &d, &["config"]));
    }
    let raw: [(&str, &[u8]); 4] = [
        ("config not JSON", b"{ not json"),
        ("config empty", b""),
        ("config an array", b"[1, 2, 3]"),
        ("config NUL bytes", &[0u8; 16]),
    ];
    for (i, (name, bytes)) in raw.into_iter().enumerate() {
        let d = model_dir(root, &format!("raw{i}"), |d| {
            std::fs::write(d.join("config.json"), bytes).unwrap()
        });
        out.push(inspect(name, &d, &["config.json"]));
    }
    let st = std::fs::read(fixture("tiny_llama/model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let mut lying = st.clone();
    lying[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let mut bad_json = st.clone();
    bad_json[8] = b'!';
    let st_edits: [(&str, Vec<u8>); 6] = [
        ("safetensors empty", Vec::new()),
        ("safetensors 7 bytes", st[..7].to_vec()),
        ("safetensors header cut", st[..8 + header_len / 2].to_vec()),
        ("safetensors data cut", st[..st.len() / 2].to_vec()),
        ("safetensors header length huge", lying),
        ("safetensors header not JSON", bad_json),
    ];
    for (i, (name, bytes)) in st_edits.into_iter().enumerate() {
        let d = model_dir(root, &format!("st{i}"), |d| {
            std::fs::write(d.join("model.safetensors"), bytes).unwrap()
        });
        out.push(inspect(name, &d, &["model.safetensors"]));
    }
    let tok_edits: [(&str, &[u8]); 3] = [
        ("tokenizer not JSON", b"{"),
        ("tokenizer empty object", b"{}"),
        (
            "tokenizer wrong model",
            br#"{"model": {"type": "Nonsense"}}"#,
        ),
    ];
    for (i, (name, bytes)) in tok_edits.into_iter().enumerate() {
        let d = model_dir(root, &format!("tok{i}"), |d| {
            std::fs::write(d.join("tokenizer.json"), bytes).unwrap()
        });
        out.push(inspect(name, &d, &["tokenizer"]));
    }
    let d = model_dir(root, "noweights", |d| {
        std::fs::remove_file(d.join("model.safetensors")).unwrap()
    });
    out.push(inspect("no weights file", &d, &["noweights"]));
    let d = root.join("model.safetensors");
    std::fs::create_dir_all(&d).unwrap();
    out.push(inspect(
        "directory named model.safetensors",
        &d,
        &["model.safetensors"],
    ));
    out
}

/// GGUF files: truncations at every structural boundary, bad magic and version,
/// counts far beyond the file.
fn gguf_cases(root: &Path) -> Vec<Case> {
    let good = std::fs::read(fixture("tiny_llama/tiny_llama.gguf")).unwrap();
    let mut out = Vec::new();
    let mut write = |name: &str, bytes: Vec<u8>| {
        let p = root.join(format!("{}.gguf", name.replace(' ', "_")));
        std::fs::write(&p, bytes).unwrap();
        out.push(inspect(
            name,
            &p,
            &[&p.file_name().unwrap().to_string_lossy()],
        ));
    };
    for cut in [
        0,
        3,
        4,
        8,
        16,
        23,
        24,
        40,
        100,
        1000,
        good.len() / 2,
        good.len() - 1,
    ] {
        write(&format!("gguf cut at {cut}"), good[..cut].to_vec());
    }
    let mut magic = good.clone();
    magic[..4].copy_from_slice(b"GGUX");
    write("gguf bad magic", magic);
    let mut version = good.clone();
    version[4..8].copy_from_slice(&99u32.to_le_bytes());
    write("gguf version 99", version);
    for (name, at, v) in [
        ("gguf tensor count 2^63", 8, 1u64 << 63),
        ("gguf tensor count 10^9", 8, 1_000_000_000),
        ("gguf kv count 2^64-1", 16, u64::MAX),
        ("gguf kv count 10^9", 16, 1_000_000_000),
    ] {
        let mut b = good.clone();
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        write(name, b);
    }
    let mut noise = good[..24].to_vec();
    noise.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    write("gguf header then noise", noise);
    out
}

fn bare_plan(format: &str, act_bits: &str) -> String {
    let entries: Vec<String> = common::embedded_tensor_names()
        .iter()
        .map(|n| format!(r#"["{n}", {{"format": "{format}", "act_bits": {act_bits}}}]"#))
        .collect();
    format!(r#"{{"entries": [{}]}}"#, entries.join(","))
}

/// Plans (JSON and YAML), texts, profiles and imatrix files, on the embedded model.
fn file_cases(root: &Path) -> Vec<Case> {
    let good_plan = root.join("good_plan.json");
    std::fs::write(&good_plan, bare_plan("q4_0", "16")).unwrap();
    let mut out = Vec::new();
    let mut file = |name: &str, file: &str, bytes: Vec<u8>, args: &[&str], names: &[&str]| {
        let p = root.join(file);
        std::fs::write(&p, bytes).unwrap();
        let args = args
            .iter()
            .map(|a| a.replace("{}", &p.display().to_string()))
            .map(|a| a.replace("{plan}", &good_plan.display().to_string()))
            .collect();
        let mut names: Vec<String> = names.iter().map(|n| s(n)).collect();
        names.push(s(file));
        out.push(Case {
            name: name.into(),
            args,
            names,
        });
    };
    let eval_plan = ["eval", "--plan", "{}"];
    file(
        "plan not JSON",
        "p1.json",
        b"{ nope".to_vec(),
        &eval_plan,
        &[],
    );
    file("plan empty", "p2.json", Vec::new(), &eval_plan, &[]);
    file(
        "plan unknown format",
        "p3.json",
        bare_plan("q9_9", "16").into_bytes(),
        &eval_plan,
        &[],
    );
    file(
        "plan act bits 3",
        "p4.json",
        bare_plan("q4_0", "3").into_bytes(),
        &eval_plan,
        &[],
    );
    file(
        "plan act bits 300",
        "p5.json",
        bare_plan("q4_0", "300").into_bytes(),
        &eval_plan,
        &[],
    );
    file(
        "plan unknown tensor",
        "p6.json",
        br#"{"entries": [["blk.99.attn_q.weight", {"format": "q4_0", "act_bits": 16}]]}"#.to_vec(),
        &eval_plan,
        &[],
    );
    file(
        "plan schema 99",
        "p7.json",
        br#"{"schema_version":99,"qevo_version":"0","model":"m","model_fingerprint":"0","target":"t","seed":0,"unit":"role","metrics":null,"tensors":[]}"#.to_vec(),
        &eval_plan,
        &["schema_version"],
    );
    file(
        "plan YAML garbage",
        "p8.yaml",
        b": : :\n- [".to_vec(),
        &eval_plan,
        &[],
    );
    file(
        "plan YAML list",
        "p9.yaml",
        b"- 1\n- 2\n".to_vec(),
        &eval_plan,
        &[],
    );
    let eval_text = ["eval", "--text", "{}"];
    file("text empty", "t1.txt", Vec::new(), &eval_text, &[]);
    file(
        "text NUL bytes",
        "t2.txt",
        vec![0u8; 4096],
        &eval_text,
        &["NUL"],
    );
    file(
        "text not UTF-8",
        "t3.txt",
        vec![0xff, 0xfe, 0x80, 0x81],
        &eval_text,
        &[],
    );
    file("text too short", "t4.txt", b"hi".to_vec(), &eval_text, &[]);
    let good_profile = std::process::Command::new(env!("CARGO_BIN_EXE_qevo"))
        .args(["profiles", "show", "arm-neon"])
        .output()
        .unwrap()
        .stdout;
    let good_profile = String::from_utf8(good_profile).unwrap();
    let cost = ["cost", "--plan", "{plan}", "--target", "{}"];
    let profile_edits: [(&str, &str, &str, &str); 6] = [
        (
            "profile bandwidth 1e-300",
            "mem_bandwidth_gb_per_s = 25.0",
            "mem_bandwidth_gb_per_s = 1e-300",
            "mem_bandwidth_gb_per_s",
        ),
        (
            "profile energy 1e308",
            "energy_pj_per_dram_byte = 20.0",
            "energy_pj_per_dram_byte = 1e308",
            "energy_pj_per_dram_byte",
        ),
        (
            "profile negative overhead",
            "layer_overhead_us = 5.0",
            "layer_overhead_us = -5.0",
            "layer_overhead_us",
        ),
        (
            "profile float bits 7",
            "float_bits = 16",
            "float_bits = 7",
            "float_bits",
        ),
        (
            "profile weight bits empty",
            "weight_bits = [2, 3, 4, 5, 6, 8, 16, 32]",
            "weight_bits = []",
            "weight_bits",
        ),
        (
            "profile name wrong type",
            "name = \"arm-neon\"",
            "name = 5",
            "name",
        ),
    ];
    for (i, (name, from, to, key)) in profile_edits.into_iter().enumerate() {
        assert!(good_profile.contains(from), "{from}");
        let edited = good_profile.replace(from, to);
        file(
            name,
            &format!("prof{i}.toml"),
            edited.into_bytes(),
            &cost,
            &[key],
        );
    }
    file(
        "profile not TOML",
        "prof_bad.toml",
        b"[[[ nope".to_vec(),
        &cost,
        &[],
    );
    file("profile empty", "prof_empty.toml", Vec::new(), &cost, &[]);
    let im = ["quantize", "--format", "q4_k", "--imatrix-file", "{}"];
    file("imatrix empty", "im1.gguf", Vec::new(), &im, &[]);
    file("imatrix garbage", "im2.dat", vec![7u8; 100], &im, &[]);
    let other = std::fs::read(fixture("ggml_quants/imatrix.gguf")).unwrap();
    file(
        "imatrix cut",
        "im3.gguf",
        other[..other.len() / 3].to_vec(),
        &im,
        &[],
    );
    out
}

/// A search resumed from a damaged checkpoint.
fn checkpoint_cases(root: &Path) -> Vec<Case> {
    let mut out = Vec::new();
    for (i, (name, bytes)) in [
        ("checkpoint not JSON", b"{ torn".to_vec()),
        ("checkpoint empty object", b"{}".to_vec()),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = root.join(format!("ck{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("checkpoint.json"), bytes).unwrap();
        let mut args = vec![
            s("search"),
            s("--target"),
            s("arm-neon"),
            s("--out"),
            dir.display().to_string(),
            s("--resume"),
            s("--generations"),
            s("1"),
        ];
        args.extend(common::flags(common::SMALL, &[]));
        out.push(Case {
            name: name.into(),
            args,
            names: vec![s("checkpoint.json")],
        });
    }
    out
}

#[test]
fn every_malformed_input_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cache = root.join("cache");
    let cases: Vec<Case> = [
        model_cases(root),
        gguf_cases(root),
        file_cases(root),
        checkpoint_cases(root),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let start = Instant::now();
        let o = qevo(&args, &cache);
        let took = start.elapsed();
        let out = text(&o);
        let code = o.status.code();
        let mut bad = Vec::new();
        if !matches!(code, Some(1) | Some(2)) {
            bad.push(format!("exit {code:?}"));
        }
        if out.contains("panicked") || out.contains("RUST_BACKTRACE") {
            bad.push("panicked".into());
        }
        for n in &c.names {
            if !out.contains(n.as_str()) {
                bad.push(format!("does not name `{n}`"));
            }
        }
        if took > Duration::from_secs(5) && !c.args[0].starts_with("search") {
            bad.push(format!("took {took:?}"));
        }
        if !bad.is_empty() {
            failures.push(format!(
                "{}: {}\n    {}",
                c.name,
                bad.join(", "),
                out.trim()
            ));
        }
    }
    println!(
        "{} malformed inputs, {} failures",
        cases.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
