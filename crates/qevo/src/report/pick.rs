//! Which rows of a long, size-sorted front the terminal shows: a pure function of the
//! row count, so the same front always prints the same rows.

/// Up to `max` positions out of `0..n` (rows sorted by size), evenly spaced by rank
/// (the size quantiles 0, 1/(max−1), …, 1), always with the first (smallest), the last
/// (largest) and `keep` (the recommended plan). `max` is raised to 3 so those three fit.
/// Sorted and distinct; all of `0..n` when `n <= max`.
///
/// When `keep` is not already a quantile it takes the place of the nearest interior
/// quantile, so the count never exceeds `max`.
pub fn representative(n: usize, keep: Option<usize>, max: usize) -> Vec<usize> {
    let max = max.max(3);
    if n <= max {
        return (0..n).collect();
    }
    let steps = max - 1;
    // Rounded i·(n−1)/(max−1): distinct because the step (n−1)/(max−1) exceeds 1.
    let mut picks: Vec<usize> = (0..max)
        .map(|i| (i * (n - 1) + steps / 2) / steps)
        .collect();
    if let Some(k) = keep.filter(|&k| k < n && !picks.contains(&k)) {
        // max >= 3, so there is always an interior pick to give up.
        if let Some(nearest) = (1..max - 1).min_by_key(|&i| picks[i].abs_diff(k)) {
            picks[nearest] = k;
            picks.sort_unstable();
        }
    }
    picks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_fronts_are_shown_whole() {
        assert_eq!(representative(5, Some(2), 20), vec![0, 1, 2, 3, 4]);
        assert_eq!(representative(0, None, 20), Vec::<usize>::new());
        assert_eq!(representative(20, None, 20), (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn long_fronts_get_evenly_spaced_rows_with_both_ends() {
        let p = representative(100, None, 20);
        assert_eq!(p.len(), 20);
        assert_eq!((p[0], p[19]), (0, 99));
        // 99 / 19 ≈ 5.2 ranks per step: every gap is 5 or 6.
        for w in p.windows(2) {
            assert!((5..=6).contains(&(w[1] - w[0])), "{p:?}");
        }
    }

    #[test]
    fn recommended_row_is_always_shown_without_exceeding_the_limit() {
        for n in [21usize, 57, 100, 1000] {
            for k in [0, 1, n / 3, n / 2 + 1, n - 2, n - 1] {
                let p = representative(n, Some(k), 20);
                assert!(p.len() <= 20, "n {n} k {k}: {p:?}");
                assert!(p.contains(&k), "n {n} k {k}: {p:?}");
                assert!(p.contains(&0) && p.contains(&(n - 1)), "n {n} k {k}: {p:?}");
                assert!(p.windows(2).all(|w| w[0] < w[1]), "n {n} k {k}: {p:?}");
            }
        }
    }

    #[test]
    fn tiny_limits_still_keep_smallest_largest_and_recommended() {
        assert_eq!(representative(10, Some(4), 1), vec![0, 4, 9]);
        assert_eq!(representative(10, None, 2), vec![0, 5, 9]);
    }
}
