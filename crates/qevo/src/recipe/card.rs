//! The model card written beside a `qevo gguf` file (`FILE.md`), as GGUF publishers
//! write them: how it was made, what each role of tensor holds, its size, and its quality
//! as qevo measured it and, when compared, as llama.cpp measured it next to its own file.

use super::compare::Comparison;
use super::{Chosen, GgufOutcome};
use crate::model::{Model, Role};
use crate::plan::tensor_bytes;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The card's Markdown, with llama.cpp's comparison when one was made.
pub fn card(model: &Model, o: &GgufOutcome, cmp: Option<&Comparison>) -> String {
    let mut s = String::new();
    let name = o
        .paths
        .gguf
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let _ = writeln!(s, "# {name}\n");
    let _ = writeln!(
        s,
        "A GGUF of `{}` made by qevo {} at the size of `{}`: a per-tensor mix of llama.cpp \
         types, searched on calibration text and checked on text it was not fitted on. \
         It runs on unmodified llama.cpp.\n",
        model.source.display(),
        env!("CARGO_PKG_VERSION"),
        o.size
    );
    let _ = writeln!(s, "```\n{}\n```\n", o.command);
    size_section(&mut s, model, o);
    roles_section(&mut s, model, o);
    quality_section(&mut s, o, o.plan.size_bytes(model));
    if let Some(r) = &o.at_limit {
        limit_section(&mut s, r);
    }
    if let Some(c) = cmp {
        comparison_section(&mut s, c);
    }
    s
}

fn size_section(s: &mut String, model: &Model, o: &GgufOutcome) {
    let planned = o.plan.size_bytes(model);
    let _ = writeln!(s, "## Size\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| file | {} bytes ({:.2} MB) |",
        o.file_bytes,
        o.file_bytes as f64 / 1e6
    );
    let _ = writeln!(
        s,
        "| quantized tensors | {planned} bytes, {:.3} bits per weight |",
        o.bpw(model)
    );
    let _ = writeln!(
        s,
        "| budget ({}) | {} bytes, {:.3} bits per weight |\n",
        o.size, o.budget_bytes, o.budget_bpw
    );
}

/// Per role: how many tensors of each type, and the role's bits per weight.
fn roles_section(s: &mut String, model: &Model, o: &GgufOutcome) {
    let _ = writeln!(s, "## Types per role\n");
    let _ = writeln!(
        s,
        "| role | tensors by type | bits per weight |\n|---|---|---|"
    );
    let mut per: BTreeMap<usize, (Role, BTreeMap<String, usize>, u64, u64)> = BTreeMap::new();
    for (name, c) in &o.plan.entries {
        let Some(t) = model.tensor_index(name).map(|i| &model.tensors[i]) else {
            continue;
        };
        let written = crate::plan::written_format(c.format, t.rows, t.cols);
        let key = Role::ALL.iter().position(|r| *r == t.role).unwrap_or(0);
        let e = per.entry(key).or_insert((t.role, BTreeMap::new(), 0, 0));
        *e.1.entry(written.to_string()).or_default() += 1;
        e.2 += tensor_bytes(c.format, t.rows, t.cols);
        e.3 += t.params() as u64;
    }
    for (role, types, bytes, params) in per.values() {
        let list: Vec<String> = types.iter().map(|(t, n)| format!("{n}× {t}")).collect();
        let bpw = *bytes as f64 * 8.0 / (*params).max(1) as f64;
        let _ = writeln!(s, "| {} | {} | {bpw:.3} |", role.as_str(), list.join(", "));
    }
    let _ = writeln!(s);
}

fn quality_section(s: &mut String, o: &GgufOutcome, planned: u64) {
    let _ = writeln!(s, "## Quality (qevo's measure)\n");
    let _ = writeln!(
        s,
        "Mean KL divergence to the unquantized model on a validation slice of the \
         calibration text (windows of {} tokens) that no choice was fitted on.\n",
        o.seq_len
    );
    let _ = writeln!(
        s,
        "| plan | bytes | validation KL | top-1 agreement |\n|---|---|---|---|"
    );
    let row = |s: &mut String, what: &str, bytes: u64, m: &crate::eval::Metrics| {
        let _ = writeln!(
            s,
            "| {what} | {bytes} | {:.5} | {:.2}% |",
            m.kl,
            m.top1 * 100.0
        );
    };
    row(
        s,
        "evolved plan",
        o.evolved.plan_bytes,
        &o.evolved.validation,
    );
    if let Some(m) = &o.llama_mix {
        row(
            s,
            &format!("llama.cpp's {} mix (qevo's quantizer)", o.size),
            m.plan_bytes,
            &m.validation,
        );
    }
    if let Some(t) = &o.tune {
        let what = match t.kept {
            true => format!("chosen plan, tuned ({} steps)", t.steps),
            false => format!("chosen plan, tuned ({} steps; not kept: no gain)", t.steps),
        };
        row(s, &what, planned, &t.after);
    }
    if let Some(k) = &o.tune_skipped {
        let _ = writeln!(
            s,
            "\nTuning did not run: its smallest run needs about {:.0} s, and {:.0} s of the time budget were left.",
            k.needed_seconds, k.left_seconds
        );
    }
    let chosen = match o.chosen {
        Chosen::Evolved => "the evolved plan",
        Chosen::LlamaMix => "llama.cpp's mix (it scored better than the evolved plan)",
    };
    let _ = writeln!(
        s,
        "\nIn the file: {chosen}{}. Read back from the file, it scores KL {:.5} (reported {:.5}).\n",
        match &o.tune {
            Some(t) if t.kept => ", tuned",
            _ => "",
        },
        o.file_check.kl,
        o.reported.kl
    );
}

/// The search at the size limit: the plan it refined to, where it started, and the
/// search-free Lagrangian allocation at the same limit, on each text.
fn limit_section(s: &mut String, r: &crate::search::refine::RefineSummary) {
    let _ = writeln!(s, "## The search at the size limit (qevo's measure)\n");
    let _ = writeln!(
        s,
        "The search's own windows ({} bytes at most): calibration (fitted on), \
         validation (choices made on) and held-out text (neither).\n",
        r.limit_bytes
    );
    let _ = writeln!(
        s,
        "| plan | bytes | calibration KL | validation KL | held-out KL |\n|---|---|---|---|---|"
    );
    let start = format!("start ({})", r.start.as_str());
    let rows = [
        Some(("refined (the search's plan)", &r.chosen)),
        Some((start.as_str(), &r.start_scores)),
        r.lagrangian.as_ref().map(|l| ("Lagrangian allocation", l)),
    ];
    for (what, l) in rows.into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {what} | {} | {:.5} | {:.5} | {:.5} |",
            l.size_bytes, l.kl, l.validation_kl, l.heldout_kl
        );
    }
    let _ = writeln!(s);
}

fn comparison_section(s: &mut String, c: &Comparison) {
    let _ = writeln!(
        s,
        "## Against llama.cpp's own {} (llama.cpp's measure)\n",
        c.llama_type
    );
    let _ = writeln!(
        s,
        "`llama-perplexity --kl-divergence`, base logits of the f16 model, `-c {}`, {} chunks of {}; \
         llama-quantize used the same importance matrix.\n",
        c.ctx, c.chunks, c.eval_text
    );
    let _ = writeln!(s, "| file | bytes | KLD | same top-p |\n|---|---|---|---|");
    for (what, f) in [
        (format!("llama-quantize {}", c.llama_type), &c.llama),
        ("qevo".into(), &c.qevo),
    ] {
        let _ = writeln!(
            s,
            "| {what} | {} | {:.6} | {:.3}% |",
            f.bytes, f.kld, f.same_top_p
        );
    }
    let _ = writeln!(s, "\nqevo's KLD is {:.3}× llama.cpp's.", c.ratio());
}
