//! SVG plots of a report: the Pareto front (KL against compression and against
//! latency, with baselines and the recommended plan) and the search's convergence
//! (hypervolume and best KL per generation). Drawn with plotters' pure-Rust SVG
//! backend, which writes `<text>` elements and needs no fonts.

use super::format as fmt;
use super::{validate, ReportData, ReportError, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult<'a> = std::result::Result<(), Box<dyn std::error::Error + 'a>>;

const FRONT_COLOR: RGBColor = RGBColor(31, 119, 180);
const REC_COLOR: RGBColor = RGBColor(214, 39, 40);
const INFEASIBLE: RGBColor = RGBColor(150, 150, 150);
const REFERENCE: RGBColor = RGBColor(120, 120, 120);
const GRID: RGBColor = RGBColor(232, 232, 232);
/// Baseline series take colours and marker shapes from these tables in order.
const BASELINE_COLORS: [RGBColor; 5] = [
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];
const BASELINE_MARKERS: [Marker; 4] = [
    Marker::Triangle,
    Marker::Square,
    Marker::Diamond,
    Marker::Cross,
];
const MARKER_SIZE: i32 = 5;
const FONT: &str = "sans-serif";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Circle,
    Triangle,
    Square,
    Diamond,
    Cross,
}

/// The outline of a marker around (0, 0) in pixels. The circle is a 16-gon and the
/// cross a thick X, so every marker can also be drawn as one filled polygon.
fn outline(m: Marker) -> Vec<(i32, i32)> {
    let s = MARKER_SIZE;
    match m {
        Marker::Circle => (0..16)
            .map(|i| {
                let a = i as f64 * std::f64::consts::PI / 8.0;
                let r = s as f64 + 0.5;
                ((r * a.cos()).round() as i32, (r * a.sin()).round() as i32)
            })
            .collect(),
        Marker::Triangle => vec![(0, -s - 1), (s + 1, s), (-s - 1, s)],
        Marker::Square => vec![(-s, -s), (s, -s), (s, s), (-s, s)],
        Marker::Diamond => vec![(0, -s - 1), (s + 1, 0), (0, s + 1), (-s - 1, 0)],
        Marker::Cross => {
            let t = 2;
            vec![
                (-s, -s + t),
                (-s + t, -s),
                (0, -t),
                (s - t, -s),
                (s, -s + t),
                (t, 0),
                (s, s - t),
                (s - t, s),
                (0, t),
                (-s + t, s),
                (-s, s - t),
                (-t, 0),
            ]
        }
    }
}

/// The same marker for a legend entry, at absolute pixel position `c` (legend
/// closures cannot return composed elements for a borrowed backend).
fn legend_marker(m: Marker, c: (i32, i32), color: RGBColor) -> Polygon<(i32, i32)> {
    let pts = outline(m)
        .into_iter()
        .map(|(x, y)| (c.0 + x, c.1 + y))
        .collect::<Vec<_>>();
    Polygon::new(pts, color.filled())
}

/// One value axis in plot space: linear, or log10 of the value when the positive
/// data spans more than two decades (then bounds sit on whole decades).
#[derive(Debug, Clone, Copy)]
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
    /// Label only whole-number ticks (generations).
    integer: bool,
}

impl Axis {
    fn fit(values: &[f64], allow_log: bool) -> Axis {
        let (min, max) = min_max(values.iter().copied()).unwrap_or((0.0, 1.0));
        if allow_log {
            if let Some((pmin, pmax)) = min_max(values.iter().copied().filter(|v| *v > 0.0)) {
                if pmax / pmin > 100.0 {
                    return Axis {
                        log: true,
                        lo: pmin.log10().floor(),
                        hi: pmax.log10().ceil(),
                        integer: false,
                    };
                }
            }
        }
        let span = max - min;
        let pad = if span > 0.0 {
            span * 0.08
        } else if max != 0.0 {
            max.abs() * 0.1
        } else {
            1.0
        };
        Axis {
            log: false,
            lo: min - pad,
            hi: max + pad,
            integer: false,
        }
    }

    fn generations(values: &[f64]) -> Axis {
        let (min, max) = min_max(values.iter().copied()).unwrap_or((0.0, 1.0));
        let pad = if max > min { (max - min) * 0.03 } else { 0.5 };
        Axis {
            log: false,
            lo: min - pad,
            hi: max + pad,
            integer: true,
        }
    }

    /// Value → plot coordinate. Non-positive values on a log axis sit on its floor.
    fn map(&self, v: f64) -> f64 {
        match (self.log, v > 0.0) {
            (false, _) => v,
            (true, true) => v.log10().max(self.lo),
            (true, false) => self.lo,
        }
    }

    fn label(&self, t: f64) -> String {
        if self.log {
            let digits = if (t - t.round()).abs() < 1e-9 { 1 } else { 2 };
            return fmt::sig(10f64.powf(t), digits);
        }
        if self.integer {
            return if (t - t.round()).abs() < 1e-9 {
                format!("{}", t.round() as i64)
            } else {
                String::new()
            };
        }
        // Round away float noise from tick arithmetic, then drop trailing zeros.
        let s = fmt::sig(t, 4);
        if s.contains('.') && !s.contains('e') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }

    fn ticks(&self) -> usize {
        if self.log {
            (self.hi - self.lo).round() as usize + 1
        } else {
            7
        }
    }

    fn describe(&self, what: &str) -> String {
        if self.log {
            format!("{what} (log scale)")
        } else {
            what.to_string()
        }
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((a, b)) => Some((a.min(v), b.max(v))),
    })
}

/// One group of points drawn with one colour and marker.
struct Layer {
    name: String,
    color: RGBColor,
    marker: Marker,
    /// Connect the points in order of x (the evolved front).
    line: bool,
    /// (x value, KL, feasible)
    points: Vec<(f64, f64, bool)>,
}

struct Panel<'a> {
    caption: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    layers: &'a [Layer],
    recommended: Option<(f64, f64)>,
    /// The FP model's x value, drawn as a vertical reference line.
    reference_x: Option<f64>,
    legend: bool,
}

// One piece: a linear sequence of drawing calls for one panel (axes, front, baselines,
// labels); each step is a single plotters call.
fn draw_panel<'a>(area: &Area<'a>, p: &Panel, ya: Axis) -> DrawResult<'a> {
    let xs: Vec<f64> = p
        .layers
        .iter()
        .flat_map(|l| l.points.iter().map(|q| q.0))
        .chain(p.reference_x)
        .collect();
    let xa = Axis::fit(&xs, true);
    let mut chart = ChartBuilder::on(area)
        .caption(p.caption, (FONT, 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(xa.lo..xa.hi, ya.lo..ya.hi)?;
    let x_label = |v: &f64| xa.label(*v);
    let y_label = |v: &f64| ya.label(*v);
    chart
        .configure_mesh()
        .x_desc(xa.describe(p.x_desc))
        .y_desc(ya.describe(p.y_desc))
        .x_labels(xa.ticks())
        .y_labels(ya.ticks())
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .max_light_lines(1)
        .light_line_style(GRID)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 14))
        .draw()?;

    if let Some(x) = p.reference_x {
        let x = xa.map(x);
        let dash = (ya.hi - ya.lo) / 40.0;
        // A dashed vertical line: short segments, since the SVG backend has no dash style.
        let segments = (0..20).map(|i| {
            let y0 = ya.lo + 2.0 * i as f64 * dash;
            PathElement::new(vec![(x, y0), (x, y0 + dash)], REFERENCE.stroke_width(2))
        });
        chart
            .draw_series(segments)?
            .label("FP model")
            .legend(|(x, y)| {
                PathElement::new(vec![(x - 8, y), (x + 8, y)], REFERENCE.stroke_width(2))
            });
        let style = TextStyle::from((FONT, 12))
            .color(&REFERENCE)
            .pos(Pos::new(HPos::Left, VPos::Top));
        chart.draw_series(std::iter::once(Text::new(" FP", (x, ya.hi), style)))?;
    }
    for layer in p.layers {
        let pts: Vec<(f64, f64, bool)> = layer
            .points
            .iter()
            .map(|&(x, y, ok)| (xa.map(x), ya.map(y), ok))
            .collect();
        if layer.line && pts.len() >= 2 {
            let mut line: Vec<(f64, f64)> = pts.iter().map(|q| (q.0, q.1)).collect();
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart.draw_series(LineSeries::new(line, layer.color.stroke_width(2)))?;
        }
        let (m, color) = (layer.marker, layer.color);
        // Hollow and filled markers are different element types, so each gets its
        // own series; the legend entry hangs on the filled one.
        let mut hollow = outline(m);
        hollow.push(hollow[0]);
        chart.draw_series(pts.iter().filter(|q| !q.2).map(|&(x, y, _)| {
            EmptyElement::at((x, y)) + PathElement::new(hollow.clone(), INFEASIBLE.stroke_width(2))
        }))?;
        chart
            .draw_series(pts.iter().filter(|q| q.2).map(|&(x, y, _)| {
                EmptyElement::at((x, y)) + Polygon::new(outline(m), color.filled())
            }))?
            .label(layer.name.as_str())
            .legend(move |c| legend_marker(m, c, color));
    }
    if p.layers.iter().any(|l| l.points.iter().any(|q| !q.2)) {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label("infeasible (hollow, grey)")
            .legend(|c| {
                let mut o: Vec<(i32, i32)> = outline(Marker::Circle)
                    .into_iter()
                    .map(|(x, y)| (c.0 + x, c.1 + y))
                    .collect();
                o.push(o[0]);
                PathElement::new(o, INFEASIBLE.stroke_width(2))
            });
    }
    if let Some((x, y)) = p.recommended {
        chart
            .draw_series(std::iter::once(Circle::new(
                (xa.map(x), ya.map(y)),
                11,
                REC_COLOR.stroke_width(3),
            )))?
            .label("recommended")
            .legend(|c| Circle::new(c, 6, REC_COLOR.stroke_width(2)));
    }
    if p.legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 13))
            .draw()?;
    }
    Ok(())
}

fn message<'a>(area: &Area<'a>, text: &str) -> DrawResult<'a> {
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from((FONT, 20))
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(text, (w as i32 / 2, h as i32 / 2), style))?;
    Ok(())
}

fn render(
    plot: &'static str,
    size: (u32, u32),
    draw: impl for<'a> FnOnce(&Area<'a>) -> DrawResult<'a>,
) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(Into::into));
        drawn.map_err(|e| ReportError::Draw {
            plot,
            msg: e.to_string(),
        })?;
    }
    Ok(out)
}

/// The Pareto front as an SVG of two panels sharing the KL axis (log scale when it
/// spans more than two decades): KL against compression (FP size / plan size) and
/// KL against latency. The evolved front is connected blue circles, each baseline
/// series has its own colour and marker, infeasible plans are hollow grey, the
/// recommended plan is ringed in red, and a grey line marks the FP model.
pub fn pareto_svg(d: &ReportData) -> Result<String> {
    validate(d)?;
    let series = |name: &str,
                  pts: &[super::Point],
                  color,
                  marker,
                  line,
                  x: &dyn Fn(&super::Point) -> f64| Layer {
        name: name.to_string(),
        color,
        marker,
        line,
        points: pts.iter().map(|p| (x(p), p.kl, p.feasible)).collect(),
    };
    let layers_by = |x: &dyn Fn(&super::Point) -> f64| -> Vec<Layer> {
        let mut v = vec![series(
            "evolved front",
            &d.front,
            FRONT_COLOR,
            Marker::Circle,
            true,
            x,
        )];
        for (i, s) in d.baselines.iter().enumerate() {
            v.push(series(
                &s.name,
                &s.points,
                BASELINE_COLORS[i % BASELINE_COLORS.len()],
                BASELINE_MARKERS[i % BASELINE_MARKERS.len()],
                false,
                x,
            ));
        }
        v.retain(|l| !l.points.is_empty());
        v
    };
    let compression = |p: &super::Point| d.compression(p);
    let latency = |p: &super::Point| p.latency_ms;
    let by_compression = layers_by(&compression);
    let by_latency = layers_by(&latency);
    let kls: Vec<f64> = by_compression
        .iter()
        .flat_map(|l| l.points.iter().map(|q| q.1))
        .collect();
    let ya = Axis::fit(&kls, true);
    let rec = d.recommended.as_ref();
    render("Pareto", (1100, 480), |root| {
        if kls.is_empty() {
            return message(root, "No plans to plot: the front and baselines are empty.");
        }
        let (left, right) = root.split_horizontally(550);
        draw_panel(
            &left,
            &Panel {
                caption: "Quality loss vs compression",
                x_desc: "compression vs FP (x)",
                y_desc: d.quality.relabel("KL to FP (nats/token)"),
                layers: &by_compression,
                recommended: rec.map(|r| (d.compression(r), r.kl)),
                reference_x: Some(1.0),
                legend: true,
            },
            ya,
        )?;
        draw_panel(
            &right,
            &Panel {
                caption: "Quality loss vs latency",
                x_desc: "latency (ms)",
                y_desc: d.quality.relabel("KL to FP (nats/token)"),
                layers: &by_latency,
                recommended: rec.map(|r| (r.latency_ms, r.kl)),
                reference_x: Some(d.fp.latency_ms),
                legend: false,
            },
            ya,
        )
    })
}

fn draw_history<'a>(
    area: &Area<'a>,
    caption: &str,
    y_desc: &str,
    gens: &[f64],
    ys: &[f64],
    color: RGBColor,
) -> DrawResult<'a> {
    let xa = Axis::generations(gens);
    let ya = Axis::fit(ys, true);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(xa.lo..xa.hi, ya.lo..ya.hi)?;
    let x_label = |v: &f64| xa.label(*v);
    let y_label = |v: &f64| ya.label(*v);
    chart
        .configure_mesh()
        .x_desc("generation")
        .y_desc(ya.describe(y_desc))
        .x_labels(xa.ticks().min(gens.len().max(3)))
        .y_labels(ya.ticks())
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .max_light_lines(1)
        .light_line_style(GRID)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 14))
        .draw()?;
    let pts: Vec<(f64, f64)> = gens.iter().zip(ys).map(|(g, y)| (*g, ya.map(*y))).collect();
    chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
    // Per-generation dots help on short runs and only clutter long ones.
    if pts.len() <= 60 {
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 2, color.filled())))?;
    }
    Ok(())
}

/// Convergence as an SVG of two stacked panels over generations: the front's
/// hypervolume (higher is better) and the best KL found so far (log scale when it
/// spans more than two decades).
pub fn convergence_svg(d: &ReportData) -> Result<String> {
    validate(d)?;
    let gens: Vec<f64> = d.history.iter().map(|h| h.generation as f64).collect();
    let hv: Vec<f64> = d.history.iter().map(|h| h.hypervolume).collect();
    let kl: Vec<f64> = d.history.iter().map(|h| h.best_kl).collect();
    render("convergence", (900, 560), |root| {
        if gens.is_empty() {
            return message(root, "No generations recorded.");
        }
        let (top, bottom) = root.split_vertically(280);
        draw_history(
            &top,
            "Hypervolume of the front",
            "hypervolume",
            &gens,
            &hv,
            FRONT_COLOR,
        )?;
        draw_history(
            &bottom,
            d.quality.relabel("Best KL so far"),
            d.quality.relabel("KL to FP (nats/token)"),
            &gens,
            &kl,
            REC_COLOR,
        )
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::fixture;
    use super::*;

    /// A small well-formedness check: the document is one `<svg>` element and every
    /// opening tag is closed in order (self-closing tags and comments excepted).
    pub(crate) fn assert_balanced_svg(svg: &str) {
        let svg = svg.trim_start();
        assert!(
            svg.starts_with("<svg"),
            "does not start with <svg: {}",
            &svg[..svg.len().min(80)]
        );
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("unterminated tag") + start;
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('!') || tag.starts_with('?') || tag.ends_with('/') {
                continue;
            }
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            if tag.starts_with('/') {
                assert_eq!(
                    stack.pop().as_deref(),
                    Some(name.as_str()),
                    "mismatched </{name}>"
                );
            } else {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed tags: {stack:?}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count());
    }

    #[test]
    fn pareto_svg_is_balanced_and_names_every_series() {
        let svg = pareto_svg(&fixture::small()).unwrap();
        assert_balanced_svg(&svg);
        for name in [
            "evolved front",
            "uniform",
            "recommended",
            "infeasible",
            "FP model",
        ] {
            assert!(svg.contains(name), "missing {name}");
        }
        assert!(svg.contains("compression vs FP (x)"));
        assert!(svg.contains("latency (ms)"));
    }

    #[test]
    fn pareto_kl_axis_is_log_when_range_spans_more_than_two_decades() {
        // Fixture KL runs from 4e-4 to 0.2: almost three decades.
        let svg = pareto_svg(&fixture::small()).unwrap();
        assert!(svg.contains("KL to FP (nats/token) (log scale)"));
        let mut d = fixture::small();
        for p in &mut d.front {
            p.kl = 0.01 + p.kl / 100.0;
        }
        d.baselines.clear();
        let svg = pareto_svg(&d).unwrap();
        assert!(!svg.contains("log scale"));
    }

    #[test]
    fn pareto_svg_handles_empty_and_single_point_reports() {
        let svg = pareto_svg(&fixture::empty()).unwrap();
        assert_balanced_svg(&svg);
        assert!(svg.contains("No plans to plot"));
        let mut d = fixture::empty();
        d.front = vec![fixture::point("only", 0.0, 1.0, 3_000_000, 100.0, 1.0)];
        let svg = pareto_svg(&d).unwrap();
        assert_balanced_svg(&svg);
        assert!(svg.contains("evolved front"));
    }

    #[test]
    fn plots_reject_non_finite_input_with_the_field_name() {
        let mut d = fixture::small();
        d.baselines[0].points[1].latency_ms = f64::INFINITY;
        let e = pareto_svg(&d).unwrap_err().to_string();
        assert!(
            e.contains("baselines `uniform`[1] `q4_0`.latency_ms"),
            "{e}"
        );
        let mut d = fixture::small();
        d.history[3].best_kl = f64::NAN;
        let e = convergence_svg(&d).unwrap_err().to_string();
        assert!(e.contains("history[generation 3].best_kl"), "{e}");
    }

    #[test]
    fn convergence_svg_is_balanced_and_handles_short_histories() {
        let svg = convergence_svg(&fixture::small()).unwrap();
        assert_balanced_svg(&svg);
        assert!(svg.contains("Hypervolume of the front"));
        assert!(svg.contains("Best KL so far"));
        let svg = convergence_svg(&fixture::empty()).unwrap();
        assert_balanced_svg(&svg);
        assert!(svg.contains("No generations recorded."));
        let mut d = fixture::empty();
        d.history = fixture::small().history[..1].to_vec();
        assert_balanced_svg(&convergence_svg(&d).unwrap());
    }

    #[test]
    fn svg_text_is_escaped() {
        let mut d = fixture::small();
        d.baselines[0].name = "<b>&evil".into();
        let svg = pareto_svg(&d).unwrap();
        assert!(svg.contains("&lt;b&gt;&amp;evil"));
        assert!(!svg.contains("<b>"));
    }
}
