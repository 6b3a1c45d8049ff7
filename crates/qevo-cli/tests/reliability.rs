//! Issue 28's corpus: the commands added after the malformed-input corpus (tune, export in
//! each format, imatrix, resume of search, tune and `qevo gguf`, report, cost and
//! plan-cost), used as a careless or hurried user would. Every case is named after what
//! it guards; each must end with its documented exit code, no panic or abort, a message
//! naming what the user typed (the file, the key, the flag) and never a library field or
//! a flag the command lacks, within seconds, and must leave every input byte for byte as
//! it was. Everything runs on the tiny llama fixture (2 layers, hidden 64).

mod common;

use common::{flags, text, tiny_search, tune_flags};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../qevo/tests/fixtures")
        .join(p)
}

fn run(root: &Path, args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qevo"))
        .args(args)
        .env("QEVO_CACHE_DIR", root.join("cache"))
        .env("QEVO_LLAMA_TOOLS", root.join("no-tools"))
        .output()
        .expect("run qevo")
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// What a case must end with.
enum Expect {
    /// Exit 1 or 2 with a message holding each of `names` and none of `never`.
    Error {
        names: Vec<String>,
        never: Vec<String>,
    },
    /// Exit `code` with output holding each of `names`.
    Exit { code: i32, names: Vec<String> },
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    expect: Expect,
    /// Files that must be byte for byte the same afterwards.
    keeps: Vec<PathBuf>,
}

fn error(name: &'static str, args: Vec<String>, names: &[&str], keeps: &[&Path]) -> Case {
    Case {
        name,
        args,
        expect: Expect::Error {
            names: names.iter().map(|s| s.to_string()).collect(),
            never: Vec::new(),
        },
        keeps: keeps.iter().map(|k| k.to_path_buf()).collect(),
    }
}

fn error_never(
    name: &'static str,
    args: Vec<String>,
    names: &[&str],
    never: &[&str],
    keeps: &[&Path],
) -> Case {
    let mut c = error(name, args, names, keeps);
    if let Expect::Error { never: n, .. } = &mut c.expect {
        *n = never.iter().map(|s| s.to_string()).collect();
    }
    c
}

/// Runs every case, checking each, and fails listing every case that went wrong.
fn check_all(root: &Path, cases: Vec<Case>) -> usize {
    let mut failures = Vec::new();
    for c in &cases {
        let before: Vec<Option<Vec<u8>>> = c.keeps.iter().map(|k| std::fs::read(k).ok()).collect();
        let start = Instant::now();
        let o = run(root, &c.args);
        let took = start.elapsed();
        let out = text(&o);
        let code = o.status.code();
        let mut bad = Vec::new();
        match &c.expect {
            Expect::Error { names, never } => {
                if !matches!(code, Some(1) | Some(2)) {
                    bad.push(format!("exit {code:?}"));
                }
                for n in names.iter().filter(|n| !out.contains(n.as_str())) {
                    bad.push(format!("does not name `{n}`"));
                }
                for n in never.iter().filter(|n| out.contains(n.as_str())) {
                    bad.push(format!("names `{n}`"));
                }
            }
            Expect::Exit { code: want, names } => {
                if code != Some(*want) {
                    bad.push(format!("exit {code:?}, expected {want}"));
                }
                for n in names.iter().filter(|n| !out.contains(n.as_str())) {
                    bad.push(format!("does not say `{n}`"));
                }
            }
        }
        if out.contains("panicked") || out.contains("RUST_BACKTRACE") {
            bad.push("panicked".into());
        }
        if took > Duration::from_secs(20) {
            bad.push(format!("took {took:?}"));
        }
        for (k, b) in c.keeps.iter().zip(&before) {
            if std::fs::read(k).ok() != *b {
                bad.push(format!("changed {}", k.display()));
            }
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
    println!("{} cases, {} failures", cases.len(), failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    cases.len()
}

/// A copy of the tiny llama HF fixture, a plan the search made for it (with its report)
/// and the search's output directory (its checkpoint).
struct Setup {
    root: tempfile::TempDir,
    model: PathBuf,
    search: PathBuf,
    plan: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("model");
        std::fs::create_dir_all(&model).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(fixture("tiny_llama").join(f), model.join(f)).unwrap();
        }
        let search = root.path().join("search");
        let mut a = args(&["search", "--target", "arm-neon", "--generations", "2"]);
        a.extend(tiny_search(&[]));
        a.extend([p(&model), "--out".into(), p(&search)]);
        let o = run(root.path(), &a);
        assert!(o.status.success(), "{}", text(&o));
        let plan = search.join("plan.json");
        Setup {
            root,
            model,
            search,
            plan,
        }
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = ["config.json", "model.safetensors", "tokenizer.json"]
            .iter()
            .map(|f| self.model.join(f))
            .collect();
        v.push(self.plan.clone());
        v
    }

    /// A copy of the search's output directory at `name`.
    fn search_copy(&self, name: &str) -> PathBuf {
        let d = self.path(name);
        std::fs::create_dir_all(&d).unwrap();
        for e in std::fs::read_dir(&self.search).unwrap().flatten() {
            if e.path().is_file() {
                std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
            }
        }
        d
    }

    /// `qevo search` resuming in a copy of the search's directory, with `extra`
    /// replacing or adding settings.
    fn resume(&self, name: &str, extra: &[&str]) -> Vec<String> {
        let d = self.search_copy(name);
        let mut a = args(&["search", "--generations", "3", "--resume"]);
        let mut base = args(&["--target", "arm-neon"]);
        base.extend(tiny_search(&[]));
        a.extend(flags(&base, extra));
        a.extend([p(&self.model), "--out".into(), p(&d)]);
        a
    }

    /// `qevo tune` on the plan with `common::TUNE`, `extra` replacing or adding flags,
    /// writing to `out`.
    fn tune(&self, out: &Path, extra: &[&str]) -> Vec<String> {
        let mut a = args(&["tune", "--plan"]);
        a.push(p(&self.plan));
        a.push(p(&self.model));
        a.extend(tune_flags(extra));
        a.extend(["--out".into(), p(out)]);
        a
    }
}

#[test]
fn search_resume_refuses_a_changed_setting_naming_its_flag() {
    let s = Setup::new();
    let text_file = s.path("other.txt");
    std::fs::write(
        &text_file,
        qevo::assets::CALIB_TEXT
            .chars()
            .rev()
            .collect::<String>()
            .repeat(2),
    )
    .unwrap();
    let resumed = |name: &'static str, extra: &[&str], flag: &str| {
        error_never(
            name,
            s.resume(name, extra),
            &["checkpoint.json", "checkpoint of another run", flag],
            &["seq_len", "calib_windows", "decode_tokens"],
            &[],
        )
    };
    let tf = p(&text_file);
    let cases = vec![
        resumed(
            "search resume with another target",
            &["--target", "hexagon"],
            "--target",
        ),
        resumed(
            "search resume with another seq len",
            &["--seq-len", "16"],
            "--seq-len",
        ),
        resumed(
            "search resume with another text",
            &["--text", &tf],
            "--text",
        ),
        resumed(
            "search resume with other decode tokens",
            &["--decode-tokens", "77"],
            "--decode-tokens",
        ),
        resumed(
            "search resume with other calibration windows",
            &["--calib-windows", "3"],
            "--calib-windows",
        ),
        resumed(
            "search resume with another formats menu",
            &["--formats", "q4_0,q8_0"],
            "--formats",
        ),
        resumed(
            "search resume with another size limit",
            &["--max-size-mb", "0.05"],
            "--max-size-mb",
        ),
        resumed(
            "search resume with another rounding",
            &["--rounding", "output"],
            "--rounding",
        ),
        resumed(
            "search resume with an importance matrix",
            &["--imatrix"],
            "--imatrix",
        ),
        error(
            "search resume without a checkpoint",
            {
                let mut a = args(&["search", "--resume"]);
                a.extend(tiny_search(&[]));
                a.extend([p(&s.model), "--out".into(), p(&s.path("fresh"))]);
                a
            },
            &["--resume", "no checkpoint"],
            &[],
        ),
        Case {
            name: "search resume with the same settings continues",
            args: s.resume("same", &[]),
            expect: Expect::Exit {
                code: 0,
                names: Vec::new(),
            },
            keeps: Vec::new(),
        },
    ];
    // A checkpoint of an older qevo, which recorded no settings.
    let old = s.search_copy("old");
    let ck = old.join("checkpoint.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ck).unwrap()).unwrap();
    v["problem_state"]
        .as_object_mut()
        .unwrap()
        .remove("run")
        .unwrap();
    std::fs::write(&ck, v.to_string()).unwrap();
    let mut a = args(&[
        "search",
        "--target",
        "arm-neon",
        "--generations",
        "3",
        "--resume",
    ]);
    a.extend(tiny_search(&[]));
    a.extend([p(&s.model), "--out".into(), p(&old)]);
    let mut cases = cases;
    cases.push(error(
        "search resume of a checkpoint that records no settings",
        a,
        &["checkpoint.json", "problem_state.run"],
        &[&ck],
    ));
    check_all(s.root(), cases);
}

/// Edits a tune checkpoint's metadata or one float, as a careless hand or a bad disk.
fn edit_checkpoint(from: &Path, to: &Path, edit: &str) {
    let b = std::fs::read(from).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let mut data = b[8 + n..].to_vec();
    let mut meta: serde_json::Value =
        serde_json::from_str(h["__metadata__"]["qevo_tune"].as_str().unwrap()).unwrap();
    let mut poke = |tensor: &str, v: f32| {
        let at = h[tensor]["data_offsets"][0].as_u64().unwrap() as usize;
        data[at..at + 4].copy_from_slice(&v.to_le_bytes());
    };
    match edit {
        "step" => meta["step"] = serde_json::json!(1_000_000_000_000_000u64),
        "nan" => poke("var.0", f32::NAN),
        "inf moment" => poke("v.0", f32::INFINITY),
        "negative moment" => poke("v.1", -1.0),
        "best" => meta["best_validation"] = serde_json::json!(-1.0),
        "rate" => meta["control"]["rate"] = serde_json::json!(1e30),
        "updates" => meta["updates"] = serde_json::json!(1u64 << 60),
        _ => unreachable!(),
    }
    h["__metadata__"]["qevo_tune"] = serde_json::Value::String(meta.to_string());
    let mut hb = h.to_string().into_bytes();
    while !hb.len().is_multiple_of(8) {
        hb.push(b' ');
    }
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let mut out = (hb.len() as u64).to_le_bytes().to_vec();
    out.extend(hb);
    out.extend(data);
    std::fs::write(to, out).unwrap();
}

#[test]
fn tune_resumes_only_its_own_run_and_names_its_own_flags() {
    let s = Setup::new();
    let done = s.path("t4");
    let o = run(s.root(), &s.tune(&done, &["--steps", "4"]));
    assert!(o.status.success(), "{}", text(&o));
    let ck = done.join("checkpoint.safetensors");
    let copy = |name: &str| {
        let d = s.path(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&ck, d.join("checkpoint.safetensors")).unwrap();
        d
    };
    let never = [
        "lr_aux",
        "train_aux",
        "--fallback",
        "--max-windows",
        "evolution.",
    ];
    let resumed = |name: &'static str, dir: &str, extra: &[&str], names: &[&str]| {
        let d = copy(dir);
        let mut a = extra.to_vec();
        a.push("--resume");
        let mut names = names.to_vec();
        names.push("checkpoint.safetensors");
        error_never(
            name,
            s.tune(&d, &a),
            &names,
            &never,
            &[&d.join("checkpoint.safetensors")],
        )
    };
    let mut cases = vec![
        resumed(
            "tune resume with fewer steps than the checkpoint took",
            "r1",
            &["--steps", "2"],
            &["--steps", "4 steps already taken"],
        ),
        resumed(
            "tune resume with another seed",
            "r2",
            &["--steps", "6", "--seed", "3"],
            &["--seed"],
        ),
        resumed(
            "tune resume with another seq len",
            "r3",
            &["--steps", "6", "--seq-len", "16"],
            &["--seq-len"],
        ),
        resumed(
            "tune resume with another norm rate",
            "r4",
            &["--steps", "6", "--lr-norm", "0.0005"],
            &["--lr-norm"],
        ),
        resumed(
            "tune resume without norms",
            "r5",
            &["--steps", "6", "--no-norms"],
            &["--no-norms"],
        ),
        resumed(
            "tune resume with another batch",
            "r6",
            &["--steps", "6", "--batch", "3"],
            &["--batch"],
        ),
        resumed(
            "tune resume with sub-scales",
            "r7",
            &["--steps", "6", "--sub-scales"],
            &["--sub-scales"],
        ),
        error_never(
            "tune resume without a checkpoint",
            s.tune(&s.path("none"), &["--steps", "2", "--resume"]),
            &["--resume", "no checkpoint"],
            &never,
            &[],
        ),
    ];
    for (i, (edit, names)) in [
        ("step", &["step", "step records"][..]),
        ("nan", &["var.0", "not finite"][..]),
        ("inf moment", &["v.0", "not finite"][..]),
        ("negative moment", &["v.1", "negative"][..]),
        ("best", &["best_validation"][..]),
        ("rate", &["control.rate"][..]),
        ("updates", &["updates"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let d = s.path(&format!("edit{i}"));
        let f = d.join("checkpoint.safetensors");
        edit_checkpoint(&ck, &f, edit);
        let mut names = names.to_vec();
        names.push("checkpoint.safetensors");
        cases.push(error(
            [
                "tune checkpoint with a step of 10^15",
                "tune checkpoint with a NaN value",
                "tune checkpoint with an infinite Adam moment",
                "tune checkpoint with a negative second moment",
                "tune checkpoint with a negative best KL",
                "tune checkpoint with a rate factor of 1e30",
                "tune checkpoint with more updates than steps",
            ][i],
            s.tune(&d, &["--steps", "6", "--resume"]),
            &names,
            &[&f],
        ));
    }
    let garbage = s.path("garbage");
    std::fs::create_dir_all(&garbage).unwrap();
    std::fs::write(garbage.join("checkpoint.safetensors"), b"not a checkpoint").unwrap();
    cases.push(error(
        "tune checkpoint that is not safetensors",
        s.tune(&garbage, &["--steps", "6", "--resume"]),
        &["checkpoint.safetensors"],
        &[&garbage.join("checkpoint.safetensors")],
    ));
    let bad = |name: &'static str, extra: &[&str], flag: &str| {
        error_never(name, s.tune(&s.path("bad"), extra), &[flag], &never, &[])
    };
    cases.extend([
        bad(
            "tune negative norm rate names --lr-norm",
            &["--lr-norm=-1"],
            "--lr-norm",
        ),
        bad(
            "tune NaN sub-scale rate names --lr-sub",
            &["--lr-sub=nan"],
            "--lr-sub",
        ),
        bad(
            "tune zero batch names --batch",
            &["--batch", "0"],
            "--batch",
        ),
        bad(
            "tune zero steps names --steps",
            &["--steps", "0"],
            "--steps",
        ),
        bad(
            "tune validation share of 2 names --validation",
            &["--validation", "2"],
            "--validation",
        ),
    ]);
    let mut a = s.tune(&s.path("few"), &[]);
    let at = a.iter().position(|x| x == "--windows").unwrap();
    a[at + 1] = "2".into();
    cases.push(error_never(
        "tune with too few windows names its flags",
        a,
        &["--validation"],
        &never,
        &[],
    ));
    let mut a = s.tune(&s.path("w0"), &[]);
    let at = a.iter().position(|x| x == "--windows").unwrap();
    a[at + 1] = "0".into();
    cases.push(error_never(
        "tune with no windows names --windows, not --max-windows",
        a,
        &["--windows"],
        &["--max-windows"],
        &[],
    ));
    let int_plan = s.path("int_plan.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.plan).unwrap()).unwrap();
    for t in v["tensors"].as_array_mut().unwrap() {
        t["format"] = serde_json::json!("int8-sym-channel");
    }
    std::fs::write(&int_plan, v.to_string()).unwrap();
    let mut a = s.tune(&s.path("int"), &[]);
    let at = a.iter().position(|x| x == "--plan").unwrap();
    a[at + 1] = p(&int_plan);
    cases.push(error_never(
        "tune of a plan that is not GGML types names the plan, not --fallback",
        a,
        &["int_plan.json", "GGML types only"],
        &["--fallback", "fallback"],
        &[&int_plan],
    ));
    // Outputs over inputs.
    cases.push(error(
        "tune output in the model directory",
        s.tune(&s.model, &["--steps", "1"]),
        &["would overwrite"],
        &s.files().iter().map(PathBuf::as_path).collect::<Vec<_>>(),
    ));
    let gdir = s.path("g");
    std::fs::create_dir_all(&gdir).unwrap();
    let gguf = gdir.join("model.gguf");
    std::fs::write(&gguf, b"a model someone keeps").unwrap();
    let mut a = args(&["tune", "--plan"]);
    a.extend([p(&s.plan), p(&gguf), "--steps".into(), "1".into()]);
    a.extend(["--out".into(), p(&gdir)]);
    cases.push(error(
        "tune output directory holding the GGUF model it reads",
        a,
        &["would overwrite", "model.gguf"],
        &[&gguf],
    ));
    let pdir = s.path("pd");
    std::fs::create_dir_all(&pdir).unwrap();
    let plan_named = pdir.join("tune.json");
    std::fs::copy(&s.plan, &plan_named).unwrap();
    let mut a = args(&["tune", "--plan"]);
    a.extend([p(&plan_named), p(&s.model), "--steps".into(), "1".into()]);
    a.extend(["--out".into(), p(&pdir)]);
    cases.push(error(
        "tune output whose tune.json is the plan",
        a,
        &["would overwrite", "tune.json"],
        &[&plan_named],
    ));
    check_all(s.root(), cases);
}

#[test]
fn exports_and_imatrix_never_write_over_an_input() {
    let s = Setup::new();
    let keep: Vec<PathBuf> = s.files();
    let keep: Vec<&Path> = keep.iter().map(PathBuf::as_path).collect();
    let im = s.path("im.gguf");
    let o = run(
        s.root(),
        &args(&["imatrix", &p(&s.model), "--out", &p(&im)]),
    );
    assert!(o.status.success(), "{}", text(&o));
    let gguf_model = s.path("m.gguf");
    let o = run(
        s.root(),
        &args(&[
            "export",
            "--plan",
            &p(&s.plan),
            &p(&s.model),
            "--out",
            &p(&gguf_model),
        ]),
    );
    assert!(o.status.success(), "{}", text(&o));
    let text_file = s.path("calib.txt");
    std::fs::write(&text_file, qevo::assets::CALIB_TEXT).unwrap();
    let export = |format: &str, out: &Path| {
        args(&[
            "export",
            "--plan",
            &p(&s.plan),
            &p(&s.model),
            "--format",
            format,
            "--out",
            &p(out),
        ])
    };
    let sub_up = s.model.join("sub").join("..");
    let link = s.path("link");
    std::os::unix::fs::symlink(&s.model, &link).unwrap();
    let mut cases = Vec::new();
    for (i, f) in ["gguf", "tensor-types", "safetensors", "compressed-tensors"]
        .into_iter()
        .enumerate()
    {
        cases.push(error(
            [
                "export gguf to MODEL/sub/.. (the source)",
                "export tensor-types to MODEL/sub/..",
                "export safetensors to MODEL/sub/..",
                "export compressed-tensors to MODEL/sub/..",
            ][i],
            export(f, &sub_up),
            &["overwrite"],
            &keep,
        ));
    }
    cases.extend([
        error(
            "export gguf onto the model's weights",
            export("gguf", &s.model.join("model.safetensors")),
            &["overwrite"],
            &keep,
        ),
        error(
            "export gguf through a link into the model directory",
            export("gguf", &link.join("model.gguf")),
            &["overwrite"],
            &keep,
        ),
        error(
            "export safetensors to the model directory itself",
            export("safetensors", &s.model),
            &["overwrite"],
            &keep,
        ),
        error(
            "export tensor-types onto the plan",
            export("tensor-types", &s.plan),
            &["overwrite", "plan.json"],
            &keep,
        ),
        error(
            "export gguf onto the plan",
            export("gguf", &s.plan),
            &["overwrite", "plan.json"],
            &keep,
        ),
        error(
            "export gguf onto its importance matrix",
            {
                let mut a = export("gguf", &im);
                a.extend(["--imatrix-file".into(), p(&im)]);
                a
            },
            &["overwrite", "im.gguf"],
            &[&im],
        ),
        error_never(
            "compressed-tensors refusal names compressed-tensors",
            export("compressed-tensors", &s.path("ct")),
            &["compressed-tensors"],
            &["packed safetensors"],
            &keep,
        ),
        error(
            "imatrix onto the model's weights",
            args(&[
                "imatrix",
                &p(&s.model),
                "--out",
                &p(&s.model.join("model.safetensors")),
            ]),
            &["overwrite"],
            &keep,
        ),
        error(
            "imatrix onto the model directory",
            args(&["imatrix", &p(&s.model), "--out", &p(&s.model)]),
            &["overwrite"],
            &keep,
        ),
        error(
            "imatrix onto MODEL/sub/../config.json",
            args(&[
                "imatrix",
                &p(&s.model),
                "--out",
                &p(&sub_up.join("config.json")),
            ]),
            &["overwrite"],
            &keep,
        ),
        error(
            "imatrix onto its text",
            args(&[
                "imatrix",
                &p(&s.model),
                "--text",
                &p(&text_file),
                "--out",
                &p(&text_file),
            ]),
            &["overwrite"],
            &[&text_file],
        ),
        error(
            "imatrix onto the GGUF model it reads",
            args(&["imatrix", &p(&gguf_model), "--out", &p(&gguf_model)]),
            &["overwrite"],
            &[&gguf_model],
        ),
        error(
            "search output in the model directory",
            {
                let mut a = args(&["search", "--generations", "1"]);
                a.extend(tiny_search(&[]));
                a.extend([p(&s.model), "--out".into(), p(&s.model)]);
                a
            },
            &["overwrite"],
            &keep,
        ),
        error(
            "search output whose plan.json is the text",
            {
                let d = s.path("st");
                std::fs::create_dir_all(&d).unwrap();
                std::fs::copy(&text_file, d.join("plan.json")).unwrap();
                let mut a = args(&["search", "--generations", "1", "--text"]);
                a.push(p(&d.join("plan.json")));
                a.extend(tiny_search(&[]));
                a.extend([p(&s.model), "--out".into(), p(&d)]);
                a
            },
            &["overwrite", "plan.json"],
            &[],
        ),
    ]);
    check_all(s.root(), cases);
}

/// A plan file with its rounding record edited.
fn plan_with_rounding(from: &Path, to: &Path, rounding: serde_json::Value) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from).unwrap()).unwrap();
    v["rounding"] = rounding;
    std::fs::write(to, v.to_string()).unwrap();
}

#[test]
fn reports_plans_and_costs_check_what_they_are_given() {
    use serde_json::json;
    let s = Setup::new();
    let mut cases = Vec::new();
    // report.json edited by hand.
    let report = s.search.join("report.json");
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for (i, (name, key, edit)) in [
        ("report with a negative KL", "kl", json!(-1.0)),
        ("report with a top-1 of 750%", "top1", json!(7.5)),
        ("report with a perplexity below 1", "perplexity", json!(0.5)),
        ("report with a negative latency", "latency_ms", json!(-3.0)),
    ]
    .into_iter()
    .enumerate()
    {
        let d = s.search_copy(&format!("rep{i}"));
        let mut v = original.clone();
        v["front"][0][key] = edit;
        std::fs::write(d.join("report.json"), v.to_string()).unwrap();
        cases.push(error(
            name,
            args(&["report", &p(&d)]),
            &["report.json", &format!("front[0].{key}")],
            &[],
        ));
    }
    let d = s.search_copy("rep-index");
    let mut v = original.clone();
    v["recommended"] = json!(9999);
    std::fs::write(d.join("report.json"), v.to_string()).unwrap();
    cases.push(error(
        "report with a recommended index past the front",
        args(&["report", &p(&d)]),
        &["report.json", "recommended", "9999"],
        &[],
    ));
    // A plan's rounding record edited by hand.
    let good = json!({"damp": 0.01, "seq_len": 8, "tokens": (0..16).collect::<Vec<u32>>()});
    for (i, (name, key, edit)) in [
        (
            "plan rounding record with a negative damping",
            "damp",
            json!(-1.0),
        ),
        (
            "plan rounding record with windows of 0 tokens",
            "seq_len",
            json!(0),
        ),
        (
            "plan rounding record with ragged windows",
            "tokens",
            json!([1, 2, 3]),
        ),
        (
            "plan rounding record with a token outside the vocabulary",
            "tokens",
            json!((0..16).map(|t| t * 1000).collect::<Vec<u32>>()),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let f = s.path(&format!("rounding{i}.json"));
        let mut r = good.clone();
        r[key] = edit;
        plan_with_rounding(&s.plan, &f, r);
        cases.push(error(
            name,
            args(&[
                "export",
                "--plan",
                &p(&f),
                &p(&s.model),
                "--out",
                &p(&s.path(&format!("r{i}.gguf"))),
            ]),
            &[&format!("rounding{i}.json"), &format!("rounding.{key}")],
            &[&f],
        ));
    }
    // Costs and plan-cost: counts checked before they drive a loop.
    let cfg = s.model.join("config.json");
    let edited = |name: &str, key: &str, v: serde_json::Value| {
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
        c[key] = v;
        let f = s.path(name);
        std::fs::write(&f, c.to_string()).unwrap();
        p(&f)
    };
    let heads = {
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
        c["num_attention_heads"] = json!(9);
        c["num_key_value_heads"] = json!(7);
        let f = s.path("heads.json");
        std::fs::write(&f, c.to_string()).unwrap();
        p(&f)
    };
    let never = ["evolution.", "error: population", "error: generations"];
    cases.extend([
        error_never(
            "plan-cost with 10^18 generations does not wrap",
            args(&[
                "plan-cost",
                &p(&cfg),
                "--machine",
                "arm-neon",
                "--generations",
                "1000000000000000000",
            ]),
            &["--generations"],
            &never,
            &[],
        ),
        error_never(
            "plan-cost with population 0 names --population",
            args(&[
                "plan-cost",
                &p(&cfg),
                "--machine",
                "arm-neon",
                "--population",
                "0",
            ]),
            &["--population"],
            &never,
            &[],
        ),
        error(
            "plan-cost of a gguf file names it as no config",
            args(&[
                "plan-cost",
                &{
                    let f = s.path("model-for-plan-cost.gguf");
                    std::fs::write(&f, b"GGUF\x03\x00\x00\x00 and no json").unwrap();
                    p(&f)
                },
                "--machine",
                "arm-neon",
            ]),
            &["model-for-plan-cost.gguf", "a GGUF file", "qevo inspect"],
            &[],
        ),
        error(
            "plan-cost with 9 heads and 7 KV heads",
            args(&["plan-cost", &heads, "--machine", "arm-neon"]),
            &["num_key_value_heads"],
            &[],
        ),
        error(
            "plan-cost with 10^9 layers",
            args(&[
                "plan-cost",
                &edited("layers.json", "num_hidden_layers", json!(1_000_000_000u64)),
                "--machine",
                "arm-neon",
            ]),
            &["num_hidden_layers"],
            &[],
        ),
        Case {
            name: "cost with 10^15 decode tokens is instant",
            args: args(&[
                "cost",
                "--plan",
                &p(&s.plan),
                &p(&s.model),
                "--decode-tokens",
                "1000000000000000",
            ]),
            expect: Expect::Exit {
                code: 0,
                names: Vec::new(),
            },
            keeps: Vec::new(),
        },
        error_never(
            "search time budget past a year",
            {
                let mut a = args(&["search", "--time-budget", "99999999999999999999h"]);
                a.extend(tiny_search(&[]));
                a.extend([p(&s.model), "--out".into(), p(&s.path("tb1"))]);
                a
            },
            &["--time-budget", "longer than a year"],
            &["unit"],
            &[],
        ),
        error_never(
            "search time budget of 1e30 seconds is too large, not a wrong unit",
            {
                let mut a = args(&["search", "--time-budget", "1e30s"]);
                a.extend(tiny_search(&[]));
                a.extend([p(&s.model), "--out".into(), p(&s.path("tb2"))]);
                a
            },
            &["--time-budget", "longer than a year"],
            &["unit"],
            &[],
        ),
        error(
            "search formats needing an importance matrix without one",
            {
                let mut a = args(&["search", "--formats", "q4_0,iq2_xs"]);
                a.extend(tiny_search(&[]));
                a.extend([p(&s.model), "--out".into(), p(&s.path("iq"))]);
                a
            },
            &["--formats", "iq2_xs", "importance matrix"],
            &[],
        ),
    ]);
    check_all(s.root(), cases);
}

#[test]
fn gguf_command_refuses_bad_sizes_resume_and_outputs_over_inputs() {
    let s = Setup::new();
    let keep: Vec<PathBuf> = s.files();
    let keep: Vec<&Path> = keep.iter().map(PathBuf::as_path).collect();
    let im = s.path("im.gguf");
    std::fs::write(&im, b"an imatrix someone keeps").unwrap();
    let gguf = |size: &str, out: &Path, extra: &[&str]| {
        let mut a = args(&[
            "gguf",
            &p(&s.model),
            &format!("--size={size}"),
            "--out",
            &p(out),
        ]);
        a.extend(args(extra));
        a
    };
    let out = s.path("m.gguf");
    let cases = vec![
        error(
            "gguf resume without a checkpoint",
            gguf("Q4_K_M", &out, &["--resume"]),
            &["--resume", "no checkpoint"],
            &[],
        ),
        error(
            "gguf with an unknown size",
            gguf("Q9_Z", &out, &[]),
            &["Q9_Z"],
            &[],
        ),
        error(
            "gguf with a negative size",
            gguf("-5MB", &out, &[]),
            &["-5MB"],
            &[],
        ),
        error(
            "gguf with an empty size",
            gguf("", &out, &[]),
            &["--size"],
            &[],
        ),
        error(
            "gguf onto the model's weights",
            gguf("Q4_K_M", &s.model.join("model.safetensors"), &[]),
            &["overwrite"],
            &keep,
        ),
        error(
            "gguf into MODEL/sub/..",
            gguf(
                "Q4_K_M",
                &s.model.join("sub").join("..").join("x.gguf"),
                &[],
            ),
            &["overwrite"],
            &keep,
        ),
        error(
            "gguf onto its importance matrix",
            gguf("Q4_K_M", &im, &["--imatrix-file", &p(&im)]),
            &["overwrite"],
            &[&im],
        ),
    ];
    check_all(s.root(), cases);
}

/// Ctrl-C during `tune` writes the result so far, says so and exits 130; the resumed
/// run then finishes.
#[test]
fn interrupted_tune_exits_130_and_says_so() {
    let s = Setup::new();
    let out = s.path("t");
    let a = s.tune(&out, &["--steps", "400"]);
    let child = Command::new(env!("CARGO_BIN_EXE_qevo"))
        .args(&a)
        .env("QEVO_CACHE_DIR", s.path("cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ck = out.join("checkpoint.safetensors");
    let start = Instant::now();
    while !ck.exists() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(130), "{t}");
    assert!(t.contains("interrupted after"), "{t}");
    assert!(out.join("model.gguf").is_file() && out.join("tune.json").is_file());
}
