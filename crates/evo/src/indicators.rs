//! Quality indicators of a front: exact hypervolume and inverted generational distance.

/// Exact hypervolume dominated by `points` (minimisation) and bounded by `reference`.
///
/// Points not strictly better than the reference in every objective add nothing.
/// Two objectives use a sweep (O(n log n)); three a sweep over the third objective with
/// an incrementally maintained 2-D staircase (O(n log n) plus removals); four slice along
/// the last objective into n such sweeps (O(n² log n)); more objectives recurse
/// (O(n^(d-2) log n)). All exact up to floating-point rounding, and fast enough for the
/// archive sizes of 2–4-objective searches (hundreds of points).
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let d = reference.len();
    let pts: Vec<&[f64]> = points
        .iter()
        .map(|p| p.as_slice())
        .filter(|p| p.len() == d && p.iter().zip(reference).all(|(x, r)| x < r))
        .collect();
    if pts.is_empty() || d == 0 {
        return 0.0;
    }
    hv_rec(pts, reference)
}

fn hv_rec(mut pts: Vec<&[f64]>, r: &[f64]) -> f64 {
    let d = r.len();
    match d {
        1 => r[0] - pts.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min),
        2 => hv2(&mut pts, r),
        3 => {
            pts.sort_by(|a, b| a[2].total_cmp(&b[2]));
            hv3_sorted(&pts, r)
        }
        4 => {
            // Slices along the 4th objective; the 3-D slice is kept sorted by its 3rd
            // objective by insertion, so each slice costs one staircase sweep.
            pts.sort_by(|a, b| a[3].total_cmp(&b[3]));
            let mut vol = 0.0;
            let mut slice: Vec<&[f64]> = Vec::with_capacity(pts.len());
            for i in 0..pts.len() {
                let p = &pts[i][..3];
                let k = slice.partition_point(|q| q[2] <= p[2]);
                slice.insert(k, p);
                let next = if i + 1 < pts.len() {
                    pts[i + 1][3]
                } else {
                    r[3]
                };
                let depth = next - pts[i][3];
                if depth > 0.0 {
                    vol += hv3_sorted(&slice, &r[..3]) * depth;
                }
            }
            vol
        }
        _ => {
            let last = d - 1;
            pts.sort_by(|a, b| a[last].total_cmp(&b[last]));
            let mut vol = 0.0;
            let mut slice: Vec<&[f64]> = Vec::with_capacity(pts.len());
            for i in 0..pts.len() {
                slice.push(&pts[i][..last]);
                let next = if i + 1 < pts.len() {
                    pts[i + 1][last]
                } else {
                    r[last]
                };
                let depth = next - pts[i][last];
                if depth > 0.0 {
                    vol += hv_rec(slice.clone(), &r[..last]) * depth;
                }
            }
            vol
        }
    }
}

fn hv2(pts: &mut [&[f64]], r: &[f64]) -> f64 {
    pts.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    let mut area = 0.0;
    let mut y = r[1];
    for p in pts.iter() {
        if p[1] < y {
            area += (r[0] - p[0]) * (y - p[1]);
            y = p[1];
        }
    }
    area
}

/// 3-D hypervolume of points already sorted by their third objective.
fn hv3_sorted(pts: &[&[f64]], r: &[f64]) -> f64 {
    // Staircase of mutually non-dominated (x, y), x ascending and so y descending, with
    // its area kept up to date: the area is Σ (rx − xᵢ)·(yᵢ₋₁ − yᵢ) (y₋₁ = ry), and an
    // insertion only changes the terms of the points it removes, its own, and its
    // successor's, so each step costs O(log n + removed) instead of O(n).
    let (rx, ry) = (r[0], r[1]);
    let mut stair: Vec<(f64, f64)> = Vec::with_capacity(pts.len());
    let mut area = 0.0;
    let mut vol = 0.0;
    let term = |x: f64, prev_y: f64, y: f64| (rx - x) * (prev_y - y);
    for i in 0..pts.len() {
        let (x, y) = (pts[i][0], pts[i][1]);
        // First staircase point with x' > x; the one before it (if any) has x' <= x
        // and the smallest y among those, so it alone decides whether (x, y) is covered.
        let pos = stair.partition_point(|&(sx, _)| sx <= x);
        let covered = pos > 0 && stair[pos - 1].1 <= y;
        if !covered {
            // The points the new one covers (x' >= x, y' >= y) sit contiguously from
            // `start` on.
            let start = if pos > 0 && stair[pos - 1].0 == x {
                pos - 1
            } else {
                pos
            };
            let mut end = start;
            while end < stair.len() && stair[end].1 >= y {
                end += 1;
            }
            let y_before = if start > 0 { stair[start - 1].1 } else { ry };
            let mut prev = y_before;
            for &(sx, sy) in &stair[start..end] {
                area -= term(sx, prev, sy);
                prev = sy;
            }
            if end < stair.len() {
                let (sx, sy) = stair[end];
                area += term(sx, y, sy) - term(sx, prev, sy);
            }
            area += term(x, y_before, y);
            stair.splice(start..end, std::iter::once((x, y)));
        }
        let next = if i + 1 < pts.len() {
            pts[i + 1][2]
        } else {
            r[2]
        };
        let depth = next - pts[i][2];
        if depth > 0.0 {
            vol += area * depth;
        }
    }
    vol
}

/// Inverted generational distance: the mean, over the points of `true_front`, of the
/// Euclidean distance to the nearest point of `front`. ∞ when `front` is empty.
pub fn igd(front: &[Vec<f64>], true_front: &[Vec<f64>]) -> f64 {
    if true_front.is_empty() {
        return 0.0;
    }
    if front.is_empty() {
        return f64::INFINITY;
    }
    let total: f64 = true_front
        .iter()
        .map(|t| {
            front
                .iter()
                .map(|p| p.iter().zip(t).map(|(a, b)| (a - b) * (a - b)).sum::<f64>())
                .fold(f64::INFINITY, f64::min)
                .sqrt()
        })
        .sum();
    total / true_front.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Exact hypervolume by coordinate compression: a grid cell counts when some point
    /// weakly dominates its lower corner. Exponential, for checking only.
    fn brute_force(points: &[Vec<f64>], r: &[f64]) -> f64 {
        let d = r.len();
        let pts: Vec<&Vec<f64>> = points
            .iter()
            .filter(|p| p.iter().zip(r).all(|(x, y)| x < y))
            .collect();
        let mut axes: Vec<Vec<f64>> = (0..d)
            .map(|k| {
                let mut v: Vec<f64> = pts.iter().map(|p| p[k]).collect();
                v.push(r[k]);
                v.sort_by(f64::total_cmp);
                v.dedup();
                v
            })
            .collect();
        for a in &mut axes {
            a.dedup();
        }
        let mut vol = 0.0;
        let mut idx = vec![0usize; d];
        loop {
            if idx.iter().enumerate().all(|(k, &i)| i + 1 < axes[k].len()) {
                let corner: Vec<f64> = (0..d).map(|k| axes[k][idx[k]]).collect();
                if pts
                    .iter()
                    .any(|p| p.iter().zip(&corner).all(|(x, c)| x <= c))
                {
                    vol += (0..d)
                        .map(|k| axes[k][idx[k] + 1] - axes[k][idx[k]])
                        .product::<f64>();
                }
            }
            let mut k = 0;
            loop {
                if k == d {
                    return vol;
                }
                idx[k] += 1;
                if idx[k] < axes[k].len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
        }
    }

    #[test]
    fn hand_computed_hypervolumes() {
        let r2 = [4.0, 4.0];
        // (1,3),(2,2),(3,1): 3*1 + 2*1 + 1*1 = 6
        let pts = vec![vec![1.0, 3.0], vec![2.0, 2.0], vec![3.0, 1.0]];
        assert_eq!(hypervolume(&pts, &r2), 6.0);
        // A dominated point and a point outside the box change nothing.
        let mut more = pts.clone();
        more.push(vec![3.0, 3.0]);
        more.push(vec![0.0, 5.0]);
        assert_eq!(hypervolume(&more, &r2), 6.0);
        // Single point in 3-D and 4-D: a box.
        assert_eq!(hypervolume(&[vec![1.0, 2.0, 3.0]], &[2.0, 4.0, 6.0]), 6.0);
        assert_eq!(
            hypervolume(&[vec![0.0, 0.0, 0.0, 0.0]], &[1.0, 2.0, 3.0, 4.0]),
            24.0
        );
        // Two 3-D boxes [0,2]x[0,1]x[0,1] and [0,1]x[0,2]x[0,1] overlap in a unit cube: 3.
        let two = vec![vec![0.0, 1.0, 0.0], vec![1.0, 0.0, 0.0]];
        assert_eq!(hypervolume(&two, &[2.0, 2.0, 1.0]), 3.0);
        assert_eq!(hypervolume(&[], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn igd_hand_computed() {
        let t = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
        assert_eq!(igd(&t, &t), 0.0);
        let f = vec![vec![0.0, 1.0]];
        assert!((igd(&f, &t) - std::f64::consts::SQRT_2 / 2.0).abs() < 1e-15);
        assert!(igd(&[], &t).is_infinite());
    }

    proptest! {
        #[test]
        fn hypervolume_matches_brute_force(
            d in 2usize..5,
            raw in prop::collection::vec(prop::collection::vec(0u8..8, 4), 0..12)
        ) {
            let pts: Vec<Vec<f64>> = raw.iter().map(|p| p[..d].iter().map(|&x| x as f64 * 0.5).collect()).collect();
            let r = vec![3.5; d];
            let fast = hypervolume(&pts, &r);
            let slow = brute_force(&pts, &r);
            prop_assert!((fast - slow).abs() <= 1e-9 * slow.max(1.0), "fast {} slow {}", fast, slow);
        }

        #[test]
        fn hypervolume_3d_matches_brute_force_on_larger_sets(
            raw in prop::collection::vec((0u16..1000, 0u16..1000, 0u16..1000), 0..30)
        ) {
            let pts: Vec<Vec<f64>> = raw.iter().map(|&(a, b, c)| vec![a as f64 / 1000.0, b as f64 / 1000.0, c as f64 / 1000.0]).collect();
            let r = vec![1.0; 3];
            let fast = hypervolume(&pts, &r);
            let slow = brute_force(&pts, &r);
            prop_assert!((fast - slow).abs() <= 1e-9, "fast {} slow {}", fast, slow);
        }
    }
}
