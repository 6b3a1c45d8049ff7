//! The HTML report: one self-contained page (inline CSS and SVG, no scripts, no
//! external resources) with the same tables as the terminal, both plots (hover a point
//! for its plan and metrics: SVG `<title>`s) and a block × role heatmap of the plan.
//! Every piece of caller text is escaped: model paths and labels are user input.

use super::tables::{self, Align, Table};
use super::{convergence_svg, pareto_svg, validate, ReportData, Result};
use std::fmt::Write as _;
use std::path::Path;

/// Escapes text for HTML element content and double- or single-quoted attributes.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1140px;padding:0 1rem;color:#222;line-height:1.4}
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;margin:0}
dl.meta dt{color:#666}dl.meta dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
th,td{padding:.25rem .7rem;border-bottom:1px solid #e4e4e4;text-align:left;white-space:nowrap}
th{background:#f4f6f8;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.rec td{background:#fdecea;font-weight:600}tr.pass td:last-child{color:#1a7f37}tr.fail td:last-child{color:#c62828;font-weight:600}
.scroll{overflow-x:auto}.plot svg{max-width:100%;height:auto}
table.heat td{font-size:.78rem;padding:.2rem .45rem;text-align:center;border:1px solid #fff}
table.heat td.row{text-align:left;background:#f4f6f8;font-weight:600}p.hint{color:#555;font-size:.9rem}
p.empty{color:#666;font-style:italic}footer{margin-top:3rem;color:#888;font-size:.85rem}
";

fn table_html(t: &Table, out: &mut String) {
    if t.rows.is_empty() {
        let _ = writeln!(out, "<p class=\"empty\">{}</p>", escape(t.empty));
        return;
    }
    let class = |a: Align| match a {
        Align::Right => " class=\"num\"",
        Align::Left => "",
    };
    out.push_str("<div class=\"scroll\"><table>\n<thead><tr>");
    for (h, a) in &t.columns {
        let _ = write!(out, "<th{}>{}</th>", class(*a), escape(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for r in &t.rows {
        match r.class {
            Some(c) => {
                let _ = write!(out, "<tr class=\"{c}\">");
            }
            None => out.push_str("<tr>"),
        }
        for (cell, (_, a)) in r.cells.iter().zip(&t.columns) {
            let _ = write!(out, "<td{}>{}</td>", class(*a), escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
}

/// Heatmap colours by bits per weight: (at most this many bits, background).
const HEAT: [(f64, &str); 7] = [
    (2.75, "#f4a582"),
    (3.75, "#fddbc7"),
    (4.75, "#fff2b3"),
    (5.75, "#d9f0d3"),
    (6.75, "#a6dba0"),
    (8.75, "#5aae61"),
    (f64::INFINITY, "#e0e0e0"),
];

fn heat_color(bits: f64) -> &'static str {
    HEAT.iter()
        .find(|(max, _)| bits <= *max)
        .map_or("#e0e0e0", |h| h.1)
}

/// One heatmap cell: format and bits on a background by bits, the full text on hover.
fn heat_cell(t: &super::TensorCell, where_: &str, colspan: usize, out: &mut String) {
    let span = if colspan > 1 {
        format!(" colspan=\"{colspan}\"")
    } else {
        String::new()
    };
    let _ = write!(
        out,
        "<td{span} style=\"background:{}\" title=\"{}\">{}<br>{}</td>",
        heat_color(t.bits),
        escape(&format!(
            "{where_} {}: {}, {} bits/weight",
            t.role,
            t.format,
            super::format::bits(t.bits)
        )),
        escape(&t.format),
        super::format::bits(t.bits)
    );
}

/// The shown plan per weight matrix: one row per block, one column per role, the
/// embedding and output as full-width rows, then the colour key.
fn heatmap(d: &ReportData, out: &mut String) {
    let cells = &d.plan_tensors;
    let mut roles: Vec<&str> = Vec::new();
    for c in cells.iter().filter(|c| c.block.is_some()) {
        if !roles.contains(&c.role.as_str()) {
            roles.push(&c.role);
        }
    }
    let blocks = cells
        .iter()
        .filter_map(|c| c.block)
        .max()
        .map_or(0, |b| b + 1);
    out.push_str("<div class=\"scroll\"><table class=\"heat\">\n<thead><tr><th>block</th>");
    for r in &roles {
        let _ = write!(out, "<th>{}</th>", escape(r));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    let whole_row = |c: &super::TensorCell, out: &mut String| {
        let _ = write!(out, "<tr><td class=\"row\">{}</td>", escape(&c.role));
        heat_cell(c, "", roles.len().max(1), out);
        out.push_str("</tr>\n");
    };
    for c in cells
        .iter()
        .filter(|c| c.block.is_none() && c.role == "embedding")
    {
        whole_row(c, out);
    }
    for b in 0..blocks {
        let _ = write!(out, "<tr><td class=\"row\">{b}</td>");
        for r in &roles {
            match cells.iter().find(|c| c.block == Some(b) && c.role == *r) {
                Some(c) => heat_cell(c, &format!("blk.{b}"), 1, out),
                None => out.push_str("<td></td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    for c in cells
        .iter()
        .filter(|c| c.block.is_none() && c.role != "embedding")
    {
        whole_row(c, out);
    }
    out.push_str("</tbody></table></div>\n<p class=\"hint\">bits per weight: ");
    let mut lo = 0.0;
    for (max, color) in HEAT {
        let label = if max.is_finite() {
            format!("{} – {}", super::format::bits(lo), super::format::bits(max))
        } else {
            format!("over {}", super::format::bits(lo))
        };
        let _ = write!(
            out,
            "<span style=\"background:{color};padding:0 .4rem;margin-right:.3rem\">{label}</span>"
        );
        lo = max;
    }
    out.push_str("</p>\n");
}

fn section(out: &mut String, title: &str) {
    let _ = writeln!(out, "<h2>{}</h2>", escape(title));
}

/// The whole report as one HTML page: header (model, fingerprint, target, seed,
/// version), recommended plan, performance against the FP model with constraint
/// checks, the Pareto plot and table, baselines, the convergence plot and table
/// (every 10 generations plus the last), and the notes.
pub fn html(d: &ReportData) -> Result<String> {
    validate(d)?;
    let pareto = pareto_svg(d)?;
    let convergence = convergence_svg(d)?;
    let mut out = String::with_capacity(64 * 1024 + pareto.len() + convergence.len());
    let title = escape(&d.title);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n<dl class=\"meta\">\n"
    );
    for (k, v) in tables::header_fields(d) {
        let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    }
    out.push_str("</dl>\n");

    section(&mut out, tables::plan_heading(d));
    table_html(&tables::recommended(d), &mut out);
    if !d.plan_tensors.is_empty() {
        out.push_str("<h3>Per layer: block × role</h3>\n");
        heatmap(d, &mut out);
    }

    section(&mut out, "Performance vs the FP model");
    table_html(&tables::performance(d), &mut out);
    if !d.constraints.is_empty() {
        let _ = writeln!(out, "<h3>{}</h3>", escape(tables::constraints_heading(d)));
        table_html(&tables::constraints(d), &mut out);
    }

    section(&mut out, "Pareto front");
    out.push_str(
        "<p class=\"hint\">Hover a point for its plan and metrics. Each panel joins the evolved \
         plans that are non-dominated in its own pair of objectives; faint dots are evolved plans \
         dominated in that pair (they are on the front through another objective).</p>\n",
    );
    let _ = writeln!(out, "<div class=\"plot\">\n{pareto}</div>");
    table_html(&tables::front(d), &mut out);

    section(&mut out, "Baselines");
    table_html(&tables::baselines(d), &mut out);
    if !d.matched.is_empty() {
        let title = d.quality.relabel("At matched sizes (KL to FP, nats/token)");
        let _ = writeln!(out, "<h3>{title}</h3>");
        table_html(&tables::matched(d), &mut out);
    }

    if d.refine.is_some() {
        let title = d
            .quality
            .relabel("At the size limit (KL to FP, nats/token)");
        let _ = writeln!(out, "<h3>{title}</h3>");
        table_html(&tables::at_limit(d), &mut out);
    }

    section(&mut out, "Convergence");
    let _ = writeln!(out, "<div class=\"plot\">\n{convergence}</div>");
    table_html(&tables::convergence(d, 10), &mut out);

    if !d.notes.is_empty() {
        section(&mut out, "Notes");
        out.push_str("<ul>\n");
        for n in &d.notes {
            let _ = writeln!(out, "<li>{}</li>", escape(n));
        }
        out.push_str("</ul>\n");
    }
    let _ = write!(
        out,
        "<footer>Generated by qevo {} (seed {}).</footer>\n</body>\n</html>\n",
        escape(&d.qevo_version),
        d.seed
    );
    Ok(out)
}

/// Renders [`html`] and writes it to `path` atomically (temp file + rename).
pub fn write_html(d: &ReportData, path: &Path) -> Result<()> {
    let page = html(d)?;
    crate::fsutil::write_atomic(path, page.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    #[test]
    fn html_escapes_script_in_model_name_and_labels() {
        let mut d = fixture::small();
        d.model = "<script>alert(1)</script>".into();
        d.front[0].label = "a\"><img src=x onerror=alert(1)>".into();
        d.notes.push("<b>note</b> & 'quote'".into());
        let page = html(&d).unwrap();
        assert!(!page.contains("<script"), "unescaped script tag");
        assert!(!page.contains("<img"), "unescaped img tag");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;b&gt;note&lt;/b&gt; &amp; &#39;quote&#39;"));
    }

    #[test]
    fn html_is_self_contained_with_all_sections() {
        let mut d = fixture::small();
        d.constraints[1].pass = false;
        let page = html(&d).unwrap();
        for needle in [
            "Recommended plan",
            "Performance vs the FP model",
            "Hardware constraints",
            "Pareto front",
            "Baselines",
            "Convergence",
            "Notes",
            "sha256:abcd",
            "arm-neon",
            "<tr class=\"rec\">",
            "<tr class=\"fail\">",
        ] {
            assert!(page.contains(needle), "missing {needle}");
        }
        assert_eq!(page.matches("<svg").count(), 2);
        for external in ["<script", "<link", "src=", "href=", "@import", "url("] {
            assert!(!page.contains(external), "external resource: {external}");
        }
    }

    #[test]
    fn heatmap_shows_every_block_and_role_with_its_format() {
        let d = fixture::large();
        let page = html(&d).unwrap();
        assert!(page.contains("<h3>Per layer: block × role</h3>"));
        let heat = &page[page.find("<table class=\"heat\">").unwrap()..];
        let heat = &heat[..heat.find("</table>").unwrap()];
        for role in ["attn_q", "attn_out", "ffn_gate", "ffn_down"] {
            assert!(heat.contains(&format!("<th>{role}</th>")), "{role}");
        }
        // 24 blocks × 7 roles, plus the embedding and output rows.
        assert_eq!(
            heat.matches("<td style=").count() + heat.matches("<td colspan").count(),
            24 * 7 + 2
        );
        assert!(heat.contains("title=\"blk.23 ffn_down: int2-asym-g32, 2.5625 bits/weight\""));
        assert!(heat.contains("<td class=\"row\">embedding</td><td colspan=\"7\""));
        assert_eq!(heat_color(2.5625), "#f4a582");
        assert_eq!(heat_color(16.0), "#e0e0e0");
    }

    #[test]
    fn html_of_an_empty_search_renders() {
        let page = html(&fixture::empty()).unwrap();
        assert!(page.contains("No recommended plan."));
        assert!(page.contains("The Pareto front is empty."));
        assert!(!page.contains("<h2>Notes</h2>"));
    }

    #[test]
    fn html_rejects_nan_before_rendering() {
        let mut d = fixture::small();
        d.fp.energy_mj = f64::NAN;
        let e = html(&d).unwrap_err().to_string();
        assert!(e.contains("fp `fp32`.energy_mj"), "{e}");
    }

    #[test]
    fn write_html_writes_the_page() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.html");
        write_html(&fixture::small(), &p).unwrap();
        let page = std::fs::read_to_string(&p).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.trim_end().ends_with("</html>"));
    }

    /// Renders the fixture to /tmp for a visual check; run with `--ignored`.
    #[test]
    #[ignore]
    fn render_example_report() {
        let d = fixture::small();
        std::fs::write("/tmp/qevo-report-example.html", html(&d).unwrap()).unwrap();
        std::fs::write("/tmp/qevo-pareto.svg", pareto_svg(&d).unwrap()).unwrap();
        std::fs::write("/tmp/qevo-convergence.svg", convergence_svg(&d).unwrap()).unwrap();
        let big = fixture::large();
        std::fs::write("/tmp/qevo-report-large.html", html(&big).unwrap()).unwrap();
        std::fs::write("/tmp/qevo-pareto-large.svg", pareto_svg(&big).unwrap()).unwrap();
        std::fs::write(
            "/tmp/qevo-convergence-large.svg",
            convergence_svg(&big).unwrap(),
        )
        .unwrap();
        let mut one = fixture::empty();
        one.front = vec![fixture::point("only", 0.01, 0.97, 2_000_000, 100.0, 1.0)];
        std::fs::write("/tmp/qevo-pareto-single.svg", pareto_svg(&one).unwrap()).unwrap();
        one.history = fixture::small().history[..1].to_vec();
        std::fs::write(
            "/tmp/qevo-convergence-single.svg",
            convergence_svg(&one).unwrap(),
        )
        .unwrap();
    }
}
