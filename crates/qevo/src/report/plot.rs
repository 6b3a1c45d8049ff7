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

/// One plotted plan: position, feasibility, the text beside it (labelled layers) and
/// its hover text.
struct PlotPoint {
    x: f64,
    y: f64,
    feasible: bool,
    label: String,
    tip: String,
}

/// One group of points drawn with one colour and marker.
struct Layer {
    name: String,
    color: RGBColor,
    marker: Marker,
    /// Connect the points in order of x (the front of this panel's pair).
    line: bool,
    /// Small pale dots (plans dominated in this panel's pair of objectives).
    faint: bool,
    /// Write each point's label beside it (baselines with few points).
    labelled: bool,
    points: Vec<PlotPoint>,
}

struct Panel<'a> {
    caption: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    layers: &'a [Layer],
    recommended: Option<(f64, f64)>,
    /// The FP model's x value, drawn as a vertical reference line.
    reference_x: Option<f64>,
    /// x is a size in MB: tick labels add the compression `reference_x / x`.
    size_ticks: bool,
    legend: bool,
}

/// A hover target in pixels with its text, drawn over the plot after plotters is done.
struct Hotspot {
    x: i32,
    y: i32,
    tip: String,
}

const FAINT_COLOR: RGBColor = RGBColor(158, 190, 218);
const FAINT_SIZE: i32 = 3;
/// Baseline series with at most this many points get a label beside each.
const LABELLED_MAX: usize = 16;
/// Where a point's label starts, in pixels from the point.
const LABEL_OFFSET: (i32, i32) = (7, -13);
/// Approximate advance of one label character in pixels.
const LABEL_CHAR_PX: i32 = 5;

/// Reserves the box of `label` beside the point at pixel `at`, unless it overlaps a box
/// already placed; returns whether it was placed.
fn place_label(placed: &mut Vec<[i32; 4]>, at: (i32, i32), label: &str) -> bool {
    let x0 = at.0 + LABEL_OFFSET.0;
    let y0 = at.1 + LABEL_OFFSET.1;
    let b = [
        x0,
        y0,
        x0 + LABEL_CHAR_PX * label.chars().count() as i32,
        y0 + 10,
    ];
    let overlaps = |o: &[i32; 4]| b[0] < o[2] && o[0] < b[2] && b[1] < o[3] && o[1] < b[3];
    if placed.iter().any(overlaps) {
        return false;
    }
    placed.push(b);
    true
}

// One piece: a linear sequence of drawing calls for one panel (axes, front, baselines,
// labels); each step is a single plotters call.
fn draw_panel<'a>(area: &Area<'a>, p: &Panel, ya: Axis, hot: &mut Vec<Hotspot>) -> DrawResult<'a> {
    let xs: Vec<f64> = p
        .layers
        .iter()
        .flat_map(|l| l.points.iter().map(|q| q.x))
        .chain(p.reference_x)
        .collect();
    let xa = Axis::fit(&xs, true);
    let mut chart = ChartBuilder::on(area)
        .caption(p.caption, (FONT, 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(xa.lo..xa.hi, ya.lo..ya.hi)?;
    let x_label = |v: &f64| match (p.size_ticks, p.reference_x) {
        (true, Some(fp)) => size_tick(&xa, *v, fp),
        _ => xa.label(*v),
    };
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
    // Pixel boxes of the labels written so far: a label that would overlap one is left
    // out (earlier series win; hover still names every point).
    let mut placed: Vec<[i32; 4]> = Vec::new();
    for layer in p.layers {
        let pts: Vec<(f64, f64, bool)> = layer
            .points
            .iter()
            .map(|q| (xa.map(q.x), ya.map(q.y), q.feasible))
            .collect();
        if layer.faint {
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(x, y, _)| Circle::new((x, y), FAINT_SIZE, FAINT_COLOR.filled())),
                )?
                .label(layer.name.as_str())
                .legend(|c| Circle::new(c, FAINT_SIZE, FAINT_COLOR.filled()));
        } else {
            draw_markers(&mut chart, layer, &pts)?;
        }
        if layer.labelled {
            let style = TextStyle::from((FONT, 10)).color(&layer.color);
            let mut shown = Vec::new();
            for (q, &(x, y, _)) in layer.points.iter().zip(&pts) {
                if place_label(&mut placed, chart.backend_coord(&(x, y)), &q.label) {
                    shown.push((q.label.clone(), x, y));
                }
            }
            chart.draw_series(shown.into_iter().map(|(label, x, y)| {
                EmptyElement::at((x, y)) + Text::new(label, LABEL_OFFSET, style.clone())
            }))?;
        }
        for (q, &(x, y, _)) in layer.points.iter().zip(&pts) {
            let (px, py) = chart.backend_coord(&(x, y));
            hot.push(Hotspot {
                x: px,
                y: py,
                tip: q.tip.clone(),
            });
        }
    }
    if p.layers
        .iter()
        .any(|l| !l.faint && l.points.iter().any(|q| !q.feasible))
    {
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
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 13))
            .draw()?;
    }
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A layer's line (when it has one) and its markers: filled when feasible, hollow grey
/// when not.
fn draw_markers<'b>(
    chart: &mut Chart<'_, 'b>,
    layer: &Layer,
    pts: &[(f64, f64, bool)],
) -> DrawResult<'b> {
    if layer.line && pts.len() >= 2 {
        let mut line: Vec<(f64, f64)> = pts.iter().map(|q| (q.0, q.1)).collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart.draw_series(LineSeries::new(line, layer.color.stroke_width(2)))?;
    }
    let (m, color) = (layer.marker, layer.color);
    // Hollow and filled markers are different element types, so each gets its own
    // series; the legend entry hangs on the filled one.
    let mut hollow = outline(m);
    hollow.push(hollow[0]);
    chart.draw_series(pts.iter().filter(|q| !q.2).map(|&(x, y, _)| {
        EmptyElement::at((x, y)) + PathElement::new(hollow.clone(), INFEASIBLE.stroke_width(2))
    }))?;
    chart
        .draw_series(
            pts.iter().filter(|q| q.2).map(|&(x, y, _)| {
                EmptyElement::at((x, y)) + Polygon::new(outline(m), color.filled())
            }),
        )?
        .label(layer.name.as_str())
        .legend(move |c| legend_marker(m, c, color));
    Ok(())
}

/// A size tick: `2.1 MB (4.0×)`, the compression against the FP size `fp_mb`.
fn size_tick(xa: &Axis, t: f64, fp_mb: f64) -> String {
    let label = xa.label(t);
    let mb = if xa.log { 10f64.powf(t) } else { t };
    if mb > 0.0 && !label.is_empty() {
        format!("{label} ({}×)", fmt::sig(fp_mb / mb, 2))
    } else {
        label
    }
}

/// Which points are on the front of one pair of objectives (both minimised): feasible
/// and not dominated by another feasible point.
pub(crate) fn front_2d(points: &[(f64, f64, bool)]) -> Vec<bool> {
    points
        .iter()
        .map(|&(x, y, ok)| {
            ok && !points
                .iter()
                .any(|&(a, b, ok2)| ok2 && a <= x && b <= y && (a < x || b < y))
        })
        .collect()
}

/// The hover text of a plan: label, plan summary (front plans), every metric, size in
/// MB with its compression.
fn tip(d: &ReportData, p: &super::Point, plan: Option<&str>) -> String {
    let mut lines = vec![p.label.clone()];
    if let Some(plan) = plan {
        lines.push(format!("plan: {plan}"));
    }
    let kl = d.quality.relabel("KL to FP (nats/token)");
    lines.push(match p.heldout_kl {
        Some(h) => format!("{kl}: {} (held-out {})", fmt::kl(p.kl), fmt::kl(h)),
        None => format!("{kl}: {}", fmt::kl(p.kl)),
    });
    lines.push(format!("top-1 agreement: {}", fmt::pct(p.top1)));
    lines.push(format!(
        "size: {} MB ({} vs FP)",
        fmt::mb(p.size_bytes),
        fmt::ratio(d.compression(p)).replace('x', "×")
    ));
    lines.push(format!(
        "latency: {} ms, energy: {} mJ",
        fmt::sig(p.latency_ms, 4),
        fmt::sig(p.energy_mj, 4)
    ));
    if !p.feasible {
        lines.push("infeasible: misses a constraint".into());
    }
    lines.join("\n")
}

/// Transparent circles over every plotted point, each with its hover text as an SVG
/// `<title>` (the browser's own tooltip: no script).
fn hotspots_svg(hot: &[Hotspot]) -> String {
    let mut out = String::from("<g id=\"hover\">\n");
    for h in hot {
        out.push_str(&format!(
            "<circle cx=\"{}\" cy=\"{}\" r=\"7\" fill=\"#ffffff\" fill-opacity=\"0\"><title>{}</title></circle>\n",
            h.x,
            h.y,
            super::html::escape(&h.tip)
        ));
    }
    out.push_str("</g>\n");
    out
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

/// The layers of one panel whose x is `x`: the evolved plans on the front of (x, KL)
/// joined by a line, the other evolved plans as faint dots, and each baseline series in
/// its colour and marker (labelled when it has few points).
fn panel_layers(d: &ReportData, x: &dyn Fn(&super::Point) -> f64) -> Vec<Layer> {
    let plot_point = |p: &super::Point, plan: Option<&str>| PlotPoint {
        x: x(p),
        y: p.kl,
        feasible: p.feasible,
        label: p.label.clone(),
        tip: tip(d, p, plan),
    };
    let xy: Vec<(f64, f64, bool)> = d.front.iter().map(|p| (x(p), p.kl, p.feasible)).collect();
    let on = front_2d(&xy);
    let (mut front, mut other) = (Vec::new(), Vec::new());
    for (i, p) in d.front.iter().enumerate() {
        let q = plot_point(p, d.front_plans.get(i).map(String::as_str));
        if on[i] {
            front.push(q)
        } else {
            other.push(q)
        }
    }
    let layer = |name: &str, color, marker, points| Layer {
        name: name.to_string(),
        color,
        marker,
        line: false,
        faint: false,
        labelled: false,
        points,
    };
    let mut v = vec![
        Layer {
            faint: true,
            ..layer("other evolved plans", FAINT_COLOR, Marker::Circle, other)
        },
        Layer {
            line: true,
            ..layer(
                "evolved front (this pair)",
                FRONT_COLOR,
                Marker::Circle,
                front,
            )
        },
    ];
    for (i, s) in d.baselines.iter().enumerate() {
        v.push(Layer {
            labelled: s.points.len() <= LABELLED_MAX,
            ..layer(
                &s.name,
                BASELINE_COLORS[i % BASELINE_COLORS.len()],
                BASELINE_MARKERS[i % BASELINE_MARKERS.len()],
                s.points.iter().map(|p| plot_point(p, None)).collect(),
            )
        });
    }
    v.retain(|l| !l.points.is_empty());
    v
}

/// The Pareto front as an SVG of two panels sharing the KL axis (log scale when it
/// spans more than two decades): KL against size (MB, ticks with the compression
/// against FP) and KL against latency. Each panel joins the evolved plans that are
/// non-dominated in its own pair of objectives; the other evolved plans are faint dots.
/// Each baseline series has its own colour and marker, its points labelled when few;
/// infeasible plans are hollow grey, the recommended plan is ringed in red, a grey line
/// marks the FP model, and hovering any point shows its plan and metrics.
pub fn pareto_svg(d: &ReportData) -> Result<String> {
    validate(d)?;
    let size = |p: &super::Point| p.size_bytes as f64 / 1e6;
    let latency = |p: &super::Point| p.latency_ms;
    let by_size = panel_layers(d, &size);
    let by_latency = panel_layers(d, &latency);
    let kls: Vec<f64> = by_size
        .iter()
        .flat_map(|l| l.points.iter().map(|q| q.y))
        .collect();
    let ya = Axis::fit(&kls, true);
    let rec = d.recommended.as_ref();
    let mut hot = Vec::new();
    let mut svg = render("Pareto", (1100, 520), |root| {
        if kls.is_empty() {
            return message(root, "No plans to plot: the front and baselines are empty.");
        }
        let (left, right) = root.split_horizontally(550);
        let kl_desc = d.quality.relabel("KL to FP (nats/token)");
        let left_panel = Panel {
            caption: "Quality loss vs size",
            x_desc: "size MB (compression vs FP)",
            y_desc: kl_desc,
            layers: &by_size,
            recommended: rec.map(|r| (size(r), r.kl)),
            reference_x: Some(size(&d.fp)),
            size_ticks: true,
            legend: true,
        };
        draw_panel(&left, &left_panel, ya, &mut hot)?;
        let right_panel = Panel {
            caption: "Quality loss vs latency",
            x_desc: "latency (ms)",
            layers: &by_latency,
            recommended: rec.map(|r| (r.latency_ms, r.kl)),
            reference_x: Some(d.fp.latency_ms),
            size_ticks: false,
            legend: false,
            ..left_panel
        };
        draw_panel(&right, &right_panel, ya, &mut hot)
    })?;
    if let Some(end) = svg.rfind("</svg>") {
        svg.insert_str(end, &hotspots_svg(&hot));
    }
    Ok(svg)
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
        assert!(svg.contains("size MB (compression vs FP)"));
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
    fn front_2d_keeps_the_feasible_non_dominated_points_of_one_pair() {
        let pts = [
            (1.0, 5.0, true),
            (2.0, 3.0, true),
            (3.0, 3.0, true), // dominated by (2, 3)
            (4.0, 1.0, true),
            (0.5, 0.5, false), // infeasible: neither on the front nor dominating
            (5.0, 2.0, true),  // dominated by (4, 1)
        ];
        assert_eq!(front_2d(&pts), [true, true, false, true, false, false]);
    }

    #[test]
    fn every_point_has_hover_text_with_plan_metrics_and_size() {
        let d = fixture::small();
        let svg = pareto_svg(&d).unwrap();
        assert_balanced_svg(&svg);
        let plotted = d.front.len() + d.baselines.iter().map(|s| s.points.len()).sum::<usize>();
        assert_eq!(
            svg.matches("<title>").count(),
            2 * plotted,
            "one per point per panel"
        );
        assert!(svg.contains(
            "<title>mix-b\nplan: attention_q int8-sym-channel, ffn_down int4-asym-g64\n"
        ));
        assert!(svg.contains("size: 1.000 MB (6.00× vs FP)"));
        // The uniform baseline's points are labelled in the plot itself.
        assert!(svg.contains(">\nq8_0\n</text>") && svg.contains(">\nq4_0\n</text>"));
        assert!(svg.contains("evolved front (this pair)"));
    }

    #[test]
    fn a_panel_joins_only_its_own_pairs_front() {
        // mix-a is the smallest-KL plan but slow: on the size panel's front, and on the
        // latency panel's front too (lowest KL); a plan that is larger and slower than
        // mix-b with higher KL is dominated in both pairs and drawn faint.
        let mut d = fixture::small();
        d.front
            .push(fixture::point("worse", 0.05, 0.9, 1_500_000, 130.0, 0.5));
        d.front_plans.push("q4_0 ×3".into());
        let layers = panel_layers(&d, &|p: &super::super::Point| p.size_bytes as f64);
        let names = |faint: bool| -> Vec<String> {
            layers
                .iter()
                .filter(|l| l.faint == faint && l.name.contains("evolved"))
                .flat_map(|l| l.points.iter().map(|q| q.label.clone()))
                .collect()
        };
        assert_eq!(names(false), ["mix-a", "mix-b"]);
        assert_eq!(
            names(true),
            ["mix-c", "worse"],
            "infeasible mix-c is not on a front"
        );
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
