//! The lattice searches behind llama.cpp's grid-based IQ quantizers (`iq3xs_init_impl`,
//! `iq2xs_init_impl` in ggml-quants.c): each grid point is a group of 4 or 8 small odd
//! levels `2l + 1`; every group of levels is indexed by packing its `l`s, and an index
//! that is not itself a grid point gets the list of its nearest grid points (all points at
//! the `nwant` smallest squared distances, by distance then grid index), searched by
//! weighted error when quantizing.
//!
//! llama.cpp builds these tables from packed level codes (`kgrid_*`); qevo rebuilds the
//! same points from the decode grids it already has (`iq_tables`, generated from
//! ggml-common.h): a grid's byte values, sorted as signed bytes, are its levels
//! `l` = 0, 1, 2, … in order (the iq2 / iq3 grids hold small positive bytes; the iq1 grid
//! holds −1, 0, 1, whose levels are 0, 1, 2). Tables are built once per type, on first use.

use super::common::nearest_int;

/// One grid's search tables.
pub(super) struct GridSearch {
    /// Each point's levels as `2l + 1`, `dim` of them used.
    points: Vec<[i8; 8]>,
    /// Index → grid point (≥ 0), or −(offset + 1) of its neighbour list.
    map: Vec<i32>,
    /// At each offset: the count n, then n grid indices.
    neighbours: Vec<u16>,
    bits: u32,
    dim: usize,
    /// Levels per coordinate (`kMaxQ`): `l` runs over `0..kmax`.
    kmax: i32,
}

/// Where a group of levels lands: on a grid point, or between several.
pub(super) enum Lookup<'a> {
    OnGrid(usize),
    Neighbours(&'a [u16]),
}

impl GridSearch {
    /// Builds the tables from decode-grid entries of `dim` bytes each (little-endian), with
    /// `bits` per level in the packed index, `map_size` indices, and neighbours at the
    /// `nwant` nearest distances; levels `l` run over `0..kmax` when rounding.
    pub(super) fn build(
        entries: &[u64],
        dim: usize,
        bits: u32,
        map_size: usize,
        nwant: usize,
        kmax: i32,
    ) -> Self {
        let mut values: Vec<u8> = entries
            .iter()
            .flat_map(|e| e.to_le_bytes().into_iter().take(dim))
            .collect();
        values.sort_unstable_by_key(|&b| b as i8);
        values.dedup();
        let level = |b: u8| values.iter().position(|&v| v == b).unwrap_or(0) as i8;
        let points: Vec<[i8; 8]> = entries
            .iter()
            .map(|e| {
                let mut p = [0i8; 8];
                for (k, b) in e.to_le_bytes().into_iter().take(dim).enumerate() {
                    p[k] = 2 * level(b) + 1;
                }
                p
            })
            .collect();
        let mut map = vec![-1i32; map_size];
        for (g, p) in points.iter().enumerate() {
            let index = (0..dim).fold(0usize, |acc, k| {
                acc | ((((p[k] - 1) / 2) as usize) << (bits as usize * k))
            });
            map[index] = g as i32;
        }
        let mut neighbours = Vec::new();
        let mut dist: Vec<(i32, usize)> = Vec::with_capacity(points.len());
        for (i, m) in map.iter_mut().enumerate() {
            if *m >= 0 {
                continue;
            }
            let mask = (1usize << bits) - 1;
            let pos: Vec<i32> = (0..dim)
                .map(|k| 2 * ((i >> (bits as usize * k)) & mask) as i32 + 1)
                .collect();
            dist.clear();
            for (j, p) in points.iter().enumerate() {
                let d2: i32 = (0..dim).map(|k| (p[k] as i32 - pos[k]).pow(2)).sum();
                dist.push((d2, j));
            }
            // All points at the `nwant` smallest distances, by (distance, index): the
            // prefix llama.cpp takes from its fully sorted list.
            let mut cut: Vec<i32> = Vec::with_capacity(nwant + 1);
            for &(d, _) in &dist {
                if (cut.len() < nwant || d < cut[cut.len() - 1]) && !cut.contains(&d) {
                    cut.push(d);
                    cut.sort_unstable();
                    cut.truncate(nwant);
                }
            }
            let limit = cut[cut.len() - 1];
            dist.retain(|&(d, _)| d <= limit);
            dist.sort_unstable();
            *m = -(neighbours.len() as i32 + 1);
            let start = neighbours.len();
            neighbours.push(0);
            neighbours.extend(dist.iter().map(|&(_, j)| j as u16));
            neighbours[start] = (neighbours.len() - start - 1) as u16;
        }
        GridSearch {
            points,
            map,
            neighbours,
            bits,
            dim,
            kmax,
        }
    }

    /// The packed index of `dim` levels `l` (each `0..2^bits`).
    pub(super) fn index(&self, levels: &[i8]) -> usize {
        levels[..self.dim]
            .iter()
            .enumerate()
            .fold(0, |acc, (k, &l)| {
                acc | ((l as usize) << (self.bits as usize * k))
            })
    }

    pub(super) fn lookup(&self, index: usize) -> Lookup<'_> {
        let m = self.map[index];
        if m >= 0 {
            Lookup::OnGrid(m as usize)
        } else {
            let off = (-m - 1) as usize;
            let n = self.neighbours[off] as usize;
            Lookup::Neighbours(&self.neighbours[off + 1..off + 1 + n])
        }
    }

    /// Grid point `g` as `2l + 1` levels.
    pub(super) fn point(&self, g: usize) -> &[i8] {
        &self.points[g][..self.dim]
    }

    /// The neighbour with the least `Σ w·(scale·q − x)²` (first on ties), its levels `l`
    /// written to `levels` (`iq3_find_best_neighbour` / `iq2_find_best_neighbour`).
    pub(super) fn best_neighbour(
        &self,
        neighbours: &[u16],
        x: &[f32],
        w: &[f32],
        scale: f32,
        levels: &mut [i8],
    ) -> usize {
        self.best_neighbour_by(neighbours, x, w, scale, |p| p as f32, levels)
    }

    /// `best_neighbour` with each coordinate `2l + 1` of a point valued by `value` (the
    /// iq1 types give level `l` a shifted value, `iq1_find_best_neighbour2`).
    pub(super) fn best_neighbour_by(
        &self,
        neighbours: &[u16],
        x: &[f32],
        w: &[f32],
        scale: f32,
        value: impl Fn(i8) -> f32,
        levels: &mut [i8],
    ) -> usize {
        let mut best_d2 = f32::MAX;
        let mut best = neighbours[0] as usize;
        for &g in neighbours {
            let mut d2 = 0.0f32;
            for (i, &p) in self.point(g as usize).iter().enumerate() {
                let diff = scale * value(p) - x[i];
                d2 += w[i] * diff * diff;
            }
            if d2 < best_d2 {
                best_d2 = d2;
                best = g as usize;
            }
        }
        for (l, &q) in levels.iter_mut().zip(self.point(best)) {
            *l = (q - 1) / 2;
        }
        best
    }
}

/// One sub-block's inputs to the grid searches: magnitudes (sign-folded), weights and
/// their square roots (the weights of the neighbour search).
pub(super) struct SubBlock<'a> {
    pub xval: &'a [f32],
    pub weight: &'a [f32],
    pub waux: &'a [f32],
}

impl GridSearch {
    /// Levels `l` of one group at inverse scale `id`: `nearest(½(id·x − 1))` clamped.
    pub(super) fn round_group(&self, xval: &[f32], id: f32, out: &mut [i8]) {
        for (o, &v) in out.iter_mut().zip(xval) {
            *o = nearest_int(0.5 * (id * v - 1.0)).clamp(0, self.kmax - 1) as i8;
        }
    }

    /// Snaps group k's levels to the grid at `scale` (best neighbour if off the grid) and
    /// returns its grid index and whether it was on the grid already.
    pub(super) fn snap(
        &self,
        s: &SubBlock,
        k: usize,
        scale: f32,
        levels: &mut [i8],
    ) -> (usize, bool) {
        let r = self.dim * k..self.dim * (k + 1);
        match self.lookup(self.index(&levels[r.clone()])) {
            Lookup::OnGrid(g) => (g, true),
            Lookup::Neighbours(n) => {
                let g = self.best_neighbour(
                    n,
                    &s.xval[r.clone()],
                    &s.waux[r.clone()],
                    scale,
                    &mut levels[r],
                );
                (g, false)
            }
        }
    }

    /// Rounds and snaps every group at inverse scale `id`; returns which were on the grid.
    pub(super) fn quantize_groups(
        &self,
        s: &SubBlock,
        id: f32,
        levels: &mut [i8],
        on_grid: &mut [bool],
    ) {
        let this_scale = 1.0 / id;
        for (k, on) in on_grid.iter_mut().enumerate() {
            let r = self.dim * k..self.dim * (k + 1);
            self.round_group(&s.xval[r.clone()], id, &mut levels[r]);
            *on = self.snap(s, k, this_scale, levels).1;
        }
    }

    /// Re-rounds the groups `redo` picks at `scale`, snapping them to the grid, and
    /// refits the scale (kept if the fit is empty).
    pub(super) fn refine(
        &self,
        s: &SubBlock,
        scale: f32,
        redo: impl Fn(usize) -> bool,
        levels: &mut [i8],
    ) -> f32 {
        let id = 1.0 / scale;
        for k in (0..levels.len() / self.dim).filter(|&k| redo(k)) {
            let r = self.dim * k..self.dim * (k + 1);
            self.round_group(&s.xval[r.clone()], id, &mut levels[r]);
            self.snap(s, k, scale, levels);
        }
        let (sumqx, sumq2) = fit_sums(s, levels);
        if sumq2 > 0.0 {
            sumqx / sumq2
        } else {
            scale
        }
    }

    /// Grid index of group k (always on the grid once searched).
    pub(super) fn grid_index(&self, levels: &[i8], k: usize) -> usize {
        match self.lookup(self.index(&levels[self.dim * k..self.dim * (k + 1)])) {
            Lookup::OnGrid(g) => g,
            // llama.cpp aborts here ("found point not on grid"); its searches never leave one.
            Lookup::Neighbours(n) => n[0] as usize,
        }
    }
}

/// Σ w·x·q and Σ w·q² with q = 2l + 1, left to right.
pub(super) fn fit_sums(s: &SubBlock, levels: &[i8]) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for (i, &l) in levels.iter().enumerate() {
        let w = s.weight[i];
        let q = (2 * l as i32 + 1) as f32;
        sumqx += w * s.xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// Magnitudes of 8 values and their sign bits; with an odd number of negatives, the
/// value of least `w·x²` (first on ties) takes the other sign, so the pattern has even
/// parity and fits in 7 bits (iq3_xxs, iq2_xxs, iq2_xs).
pub(super) fn even_parity_signs(xb: &[f32], w: &[f32], xval: &mut [f32]) -> u8 {
    let (mut s, mut nflip) = (0u8, 0);
    for i in 0..8 {
        if xb[i] >= 0.0 {
            xval[i] = xb[i];
        } else {
            xval[i] = -xb[i];
            nflip += 1;
            s |= 1 << i;
        }
    }
    if nflip % 2 == 1 {
        let mut imin = 0;
        let mut min = w[0] * xb[0] * xb[0];
        for i in 1..8 {
            let ax = w[i] * xb[i] * xb[i];
            if ax < min {
                min = ax;
                imin = i;
            }
        }
        xval[imin] = -xval[imin];
        s ^= 1 << imin;
    }
    s & 127
}

/// `MAX` over a slice, from its first element.
pub(super) fn max_of(v: &[f32]) -> f32 {
    let mut m = v[0];
    for &x in &v[1..] {
        m = if m > x { m } else { x };
    }
    m
}

/// Weights `qw · sqrt(σ² + x²)` (or `x²` without an importance matrix) and their roots.
pub(super) fn weights(
    xb: &[f32],
    qw: Option<&[f32]>,
    sigma2: f32,
    w: &mut [f32],
    waux: &mut [f32],
) {
    for i in 0..xb.len() {
        w[i] = match qw {
            Some(q) => q[i] * (sigma2 + xb[i] * xb[i]).sqrt(),
            None => xb[i] * xb[i],
        };
        waux[i] = w[i].sqrt();
    }
}

/// Σx² of a super-block, left to right.
pub(super) fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s
}
