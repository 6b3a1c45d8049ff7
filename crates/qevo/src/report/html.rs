//! The HTML report: one self-contained page (inline CSS and SVG, no scripts, no
//! external resources) with the same tables as the terminal plus both plots.
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

    section(&mut out, "Performance vs the FP model");
    table_html(&tables::performance(d), &mut out);
    if !d.constraints.is_empty() {
        let _ = writeln!(out, "<h3>{}</h3>", escape(tables::constraints_heading(d)));
        table_html(&tables::constraints(d), &mut out);
    }

    section(&mut out, "Pareto front");
    let _ = writeln!(out, "<div class=\"plot\">\n{pareto}</div>");
    table_html(&tables::front(d), &mut out);

    section(&mut out, "Baselines");
    table_html(&tables::baselines(d), &mut out);
    if !d.matched.is_empty() {
        let title = d.quality.relabel("At matched sizes (KL to FP, nats/token)");
        let _ = writeln!(out, "<h3>{title}</h3>");
        table_html(&tables::matched(d), &mut out);
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
