//! The lattice searches behind llama.cpp's grid-based IQ quantizers (`iq3xs_init_impl`,
//! `iq2xs_init_impl` in ggml-quants.c): each grid point is a group of 4 or 8 small odd
//! levels `2l + 1`; every group of levels is indexed by packing its `l`s, and an index
//! that is not itself a grid point gets the list of its nearest grid points (all points at
//! the `nwant` smallest squared distances, by distance then grid index), searched by
//! weighted error when quantizing.
//!
//! llama.cpp builds these tables from packed level codes (`kgrid_*`); qevo rebuilds the
//! same points from the decode grids it already has (`iq_tables`, generated from
//! ggml-common.h): a grid's byte values, sorted, are its levels `l` = 0, 1, 2, … in order.
//! Tables are built once per type, on first use.

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
}

/// Where a group of levels lands: on a grid point, or between several.
pub(super) enum Lookup<'a> {
    OnGrid(usize),
    Neighbours(&'a [u16]),
}

impl GridSearch {
    /// Builds the tables from decode-grid entries of `dim` bytes each (little-endian), with
    /// `bits` per level in the packed index, `map_size` indices, and neighbours at the
    /// `nwant` nearest distances.
    pub(super) fn build(
        entries: &[u64],
        dim: usize,
        bits: u32,
        map_size: usize,
        nwant: usize,
    ) -> Self {
        let mut values: Vec<u8> = entries
            .iter()
            .flat_map(|e| e.to_le_bytes().into_iter().take(dim))
            .collect();
        values.sort_unstable();
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
            dist.sort_unstable();
            *m = -(neighbours.len() as i32 + 1);
            let start = neighbours.len();
            neighbours.push(0);
            let (mut d2, mut nhave) = (dist[0].0, 1);
            for &(d, j) in &dist {
                if d > d2 {
                    if nhave == nwant {
                        break;
                    }
                    d2 = d;
                    nhave += 1;
                }
                neighbours.push(j as u16);
            }
            neighbours[start] = (neighbours.len() - start - 1) as u16;
        }
        GridSearch {
            points,
            map,
            neighbours,
            bits,
            dim,
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
        let mut best_d2 = f32::MAX;
        let mut best = neighbours[0] as usize;
        for &g in neighbours {
            let mut d2 = 0.0f32;
            for (i, &q) in self.point(g as usize).iter().enumerate() {
                let diff = scale * q as f32 - x[i];
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
