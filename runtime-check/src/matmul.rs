//! Matrix products against weights kept in their GGUF encoding.
//!
//! A weight matrix stays a byte slice of the memory-mapped file. A product decodes a tile of a few
//! rows at a time (any ggml type, through `quantize::dequantize_into`) into a small f32 buffer and
//! multiplies it with every token of the batch, so the decode cost is paid once per row per
//! forward pass and memory never holds more than one tile per thread in f32. Output rows are
//! spread over rayon's pool, one tile per task. The inner kernel is a register-blocked
//! rows × tokens dot product (2 × 6 accumulators) using AVX2+FMA when the CPU has them, plain
//! lane-parallel Rust otherwise.
//!
//! Q4_0, Q5_0, Q8_0, Q4_K, Q5_K and Q6_K weights take another path (`Matrix::matmul_quantized`):
//! the activations are quantized to 8 bits and multiplied with the blocks as they are, with
//! integer dot products (module `qdot`), as llama.cpp does.

use gguf::{GgmlType, GgufModel, TensorInfo};
use rayon::prelude::*;

use crate::error::RuntimeError;
use crate::qdot::{ActFormat, QKernel, QuantActs};

/// A 2-D weight in GGUF layout: `n_out` rows of `n_in` values (ggml `ne = [n_in, n_out]`).
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    pub n_in: usize,
    pub n_out: usize,
    data: &'a [u8],
    row_bytes: usize,
}

impl std::fmt::Debug for Matrix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} [{} x {}]",
            self.name, self.ty, self.n_out, self.n_in
        )
    }
}

impl<'a> Matrix<'a> {
    /// Wraps a tensor after checking its shape is `[n_in, n_out]` (ggml order).
    pub fn new(
        file: &'a dyn GgufModel,
        info: &'a TensorInfo,
        n_in: usize,
        n_out: usize,
    ) -> Result<Matrix<'a>, RuntimeError> {
        let expected = vec![n_in as u64, n_out as u64];
        if info.dims != expected {
            return Err(RuntimeError::TensorShape {
                name: info.name.clone(),
                expected,
                found: info.dims.clone(),
            });
        }
        let ty = info.ggml_type;
        let row_bytes = ty
            .row_bytes(n_in as u64)
            .ok_or_else(|| RuntimeError::TensorShape {
                name: info.name.clone(),
                expected: vec![n_in as u64, n_out as u64],
                found: info.dims.clone(),
            })? as usize;
        // Refuse types we cannot decode now rather than in the middle of a forward pass.
        let mut probe = vec![0f32; ty.block_size()];
        quantize::dequantize_into(ty, &vec![0u8; ty.block_bytes()], &mut probe).map_err(
            |source| RuntimeError::Decode {
                name: info.name.clone(),
                ty,
                source,
            },
        )?;
        Ok(Matrix {
            name: &info.name,
            ty,
            n_in,
            n_out,
            data: file.tensor_data(info),
            row_bytes,
        })
    }

    /// Decodes rows `first..first + dst.len() / n_in` into `dst`. F32/F16/BF16 take fast paths
    /// (exact conversions, like ggml's); every other type goes through `quantize`.
    fn decode_rows(&self, first: usize, dst: &mut [f32]) -> Result<(), RuntimeError> {
        let n_rows = dst.len() / self.n_in;
        let bytes = &self.data[first * self.row_bytes..(first + n_rows) * self.row_bytes];
        match self.ty {
            GgmlType::F32 => {
                for (o, b) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
                Ok(())
            }
            GgmlType::BF16 => {
                for (o, b) in dst.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
                }
                Ok(())
            }
            #[cfg(target_arch = "x86_64")]
            GgmlType::F16 if std::is_x86_feature_detected!("f16c") => {
                // SAFETY: F16C is present; `bytes` holds exactly 2 * dst.len() bytes.
                unsafe { avx2::f16_to_f32(bytes, dst) };
                Ok(())
            }
            ty => {
                quantize::dequantize_into(ty, bytes, dst).map_err(|source| RuntimeError::Decode {
                    name: self.name.to_string(),
                    ty,
                    source,
                })
            }
        }
    }

    /// One row decoded to f32 (embedding lookups).
    pub fn row(&self, r: usize) -> Result<Vec<f32>, RuntimeError> {
        let mut out = vec![0f32; self.n_in];
        self.decode_rows(r, &mut out)?;
        Ok(out)
    }

    /// `y[t][o] = Σ_i x[t][i] · W[o][i]` for `n_t` token rows of `x`; returns `n_t × n_out`.
    pub fn matmul(&self, x: &[f32], n_t: usize) -> Result<Vec<f32>, RuntimeError> {
        assert_eq!(
            x.len(),
            n_t * self.n_in,
            "activation size for {}",
            self.name
        );
        if let Some(fmt) = ActFormat::for_weight(self.ty) {
            return Ok(self.matmul_quantized(fmt, x, n_t));
        }
        let (n_in, n_out) = (self.n_in, self.n_out);
        // About 64 KiB of decoded weights per task (they stay in L2 while all tokens stream
        // past), and a multiple of 16 rows so two tasks never write the same cache line.
        let tile = ((16384 / n_in) / 16 * 16).clamp(16, 64);
        let n_tiles = n_out.div_ceil(tile);
        let mut y = vec![0f32; n_t * n_out];
        let out = OutPtr(y.as_mut_ptr());
        let kernel = Kernel::detect();
        (0..n_tiles)
            .into_par_iter()
            .try_for_each_init(Vec::new, |wbuf: &mut Vec<f32>, ti| {
                let first = ti * tile;
                let rows = tile.min(n_out - first);
                wbuf.resize(rows * n_in, 0.0);
                self.decode_rows(first, wbuf)?;
                // SAFETY: `wbuf` holds `rows` rows and `x` n_t rows of n_in values; tile `ti`
                // writes only columns first..first + rows of each of the n_t rows of `y`
                // (length n_t * n_out), which no other tile writes, and `y` outlives the loop.
                unsafe {
                    kernel.run(
                        wbuf.as_ptr(),
                        n_in,
                        rows,
                        x.as_ptr(),
                        n_in,
                        n_t,
                        n_in,
                        out.at(first),
                        n_out,
                    )
                };
                Ok::<(), RuntimeError>(())
            })?;
        Ok(y)
    }
}

impl Matrix<'_> {
    /// [`Matrix::matmul`] for weight types with a block dot product: the activations are
    /// quantized once to the type's `vec_dot_type` and every output is an integer block dot
    /// product (see `qdot`), as llama.cpp computes it. Each output depends only on its weight
    /// row and token row, whatever the tiling and thread count.
    fn matmul_quantized(&self, fmt: ActFormat, x: &[f32], n_t: usize) -> Vec<f32> {
        let (n_in, n_out, ty) = (self.n_in, self.n_out, self.ty);
        let acts = QuantActs::quantize(fmt, x, n_t, n_in);
        let kernel = QKernel::detect();
        // About 16 KiB of weight blocks per task, so the tile stays in L1/L2 while every
        // token streams past it; a multiple of 16 rows so two tasks never write the same cache
        // line of the output.
        let tile = ((16384 / self.row_bytes) / 16 * 16).clamp(16, 64);
        let n_tiles = n_out.div_ceil(tile);
        let mut y = vec![0f32; n_t * n_out];
        let out = OutPtr(y.as_mut_ptr());
        (0..n_tiles)
            .into_par_iter()
            .for_each_init(Vec::new, |buf: &mut Vec<f32>, ti| {
                let first = ti * tile;
                let rows = tile.min(n_out - first);
                let w = &self.data[first * self.row_bytes..(first + rows) * self.row_bytes];
                buf.resize(n_t * rows, 0.0);
                kernel.matmul_tile(ty, n_in, w, rows, &acts, buf);
                for (t, src) in buf.chunks_exact(rows).enumerate() {
                    // SAFETY: t < n_t and first + rows <= n_out, so the `rows` elements from
                    // (t, first) lie in `y` (n_t × n_out); tile `ti` alone writes the columns
                    // first..first + rows, and `y` outlives the loop.
                    unsafe {
                        std::ptr::copy_nonoverlapping(src.as_ptr(), out.at(t * n_out + first), rows)
                    };
                }
            });
        y
    }
}

/// The output pointer shared by the tiles of one product (each writes disjoint columns).
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: see `Matrix::matmul`: concurrent writers never touch the same element.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method (not a field access) so closures capture the whole `Sync` wrapper.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// `out[t * ldo + r] = a[r] · b[t]` for `n_a` rows of `a` (row r at `a + r * lda`) and `n_b`
    /// rows of `b`, each `n` values long.
    ///
    /// # Safety
    /// Every row read must be valid for `n` reads, every `out[t * ldo + r]` valid for a write,
    /// and no other thread may access those output elements during the call.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        self,
        a: *const f32,
        lda: usize,
        n_a: usize,
        b: *const f32,
        ldb: usize,
        n_b: usize,
        n: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2::tile(a, lda, n_a, b, ldb, n_b, n, out, ldo),
            Kernel::Portable => {
                for t in 0..n_b {
                    let bt = std::slice::from_raw_parts(b.add(t * ldb), n);
                    for r in 0..n_a {
                        let ar = std::slice::from_raw_parts(a.add(r * lda), n);
                        *out.add(t * ldo + r) = dot_portable(ar, bt);
                    }
                }
            }
        }
    }
}

/// Checks that `count` rows of `n` values at stride `ld` fit in `len` elements.
fn rows_fit(len: usize, count: usize, ld: usize, n: usize) -> bool {
    count == 0
        || (count - 1)
            .checked_mul(ld)
            .and_then(|o| o.checked_add(n))
            .is_some_and(|e| e <= len)
}

/// `out[t * ldo + r] = a[r] · b[t]` (both operands row-major with the given row strides): the
/// "A·Bᵀ" product the attention scores and value sums are made of.
#[allow(clippy::too_many_arguments)]
pub fn gemm_abt(
    a: &[f32],
    lda: usize,
    n_a: usize,
    b: &[f32],
    ldb: usize,
    n_b: usize,
    n: usize,
    out: &mut [f32],
    ldo: usize,
) {
    assert!(rows_fit(a.len(), n_a, lda, n), "A rows out of bounds");
    assert!(rows_fit(b.len(), n_b, ldb, n), "B rows out of bounds");
    assert!(rows_fit(out.len(), n_b, ldo, n_a), "output out of bounds");
    // SAFETY: all rows and output elements were bounds-checked above; `out` is borrowed
    // mutably, so nothing else accesses it.
    unsafe {
        Kernel::detect().run(
            a.as_ptr(),
            lda,
            n_a,
            b.as_ptr(),
            ldb,
            n_b,
            n,
            out.as_mut_ptr(),
            ldo,
        )
    }
}

/// Eight independent accumulators, so the compiler can vectorize without reassociating.
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Sum of the 8 lanes.
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// `R` weight rows × `T` token rows of dot products over `n` values: R·T accumulators in
    /// registers (2 × 6 = 12 of the 16 ymm registers, plus 2 weight vectors and 1 token vector:
    /// more would spill to the stack, which costs more than the extra loads save).
    #[inline(always)]
    unsafe fn block<const R: usize, const T: usize>(
        w: [*const f32; R],
        x: [*const f32; T],
        n: usize,
    ) -> [[f32; T]; R] {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let full = n / 8 * 8;
        let mut i = 0;
        while i < full {
            let mut wv = [_mm256_setzero_ps(); R];
            for r in 0..R {
                wv[r] = _mm256_loadu_ps(w[r].add(i));
            }
            for t in 0..T {
                let xv = _mm256_loadu_ps(x[t].add(i));
                for r in 0..R {
                    acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
                }
            }
            i += 8;
        }
        let mut out = [[0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                let mut s = hsum(acc[r][t]);
                for k in full..n {
                    s += *w[r].add(k) * *x[t].add(k);
                }
                out[r][t] = s;
            }
        }
        out
    }

    /// # Safety
    /// AVX2 and FMA must be present; otherwise as [`super::Kernel::run`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(
        a: *const f32,
        lda: usize,
        n_a: usize,
        b: *const f32,
        ldb: usize,
        n_b: usize,
        n: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        // Token groups outside, row pairs inside: the 6 token rows of a group stay in L1 while
        // the tile's weight rows (in L2) stream past them.
        let mut t = 0;
        while t < n_b {
            if n_b - t >= 6 {
                let br = [0, 1, 2, 3, 4, 5].map(|k| b.add((t + k) * ldb));
                let mut r = 0;
                while r + 2 <= n_a {
                    let d = block::<2, 6>([a.add(r * lda), a.add((r + 1) * lda)], br, n);
                    for (k, dk) in d.iter().enumerate() {
                        for (j, v) in dk.iter().enumerate() {
                            *out.add((t + j) * ldo + r + k) = *v;
                        }
                    }
                    r += 2;
                }
                if r < n_a {
                    let d = block::<1, 6>([a.add(r * lda)], br, n);
                    for (j, v) in d[0].iter().enumerate() {
                        *out.add((t + j) * ldo + r) = *v;
                    }
                }
                t += 6;
            } else {
                let bt = b.add(t * ldb);
                let mut r = 0;
                while r + 4 <= n_a {
                    let ar = [0, 1, 2, 3].map(|k| a.add((r + k) * lda));
                    let d = block::<4, 1>(ar, [bt], n);
                    for (k, dk) in d.iter().enumerate() {
                        *out.add(t * ldo + r + k) = dk[0];
                    }
                    r += 4;
                }
                while r < n_a {
                    *out.add(t * ldo + r) = block::<1, 1>([a.add(r * lda)], [bt], n)[0][0];
                    r += 1;
                }
                t += 1;
            }
        }
    }

    /// IEEE half → f32 with F16C (exact, as ggml's conversion).
    ///
    /// # Safety
    /// F16C must be present; `src.len() == 2 * dst.len()`.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
        let n = dst.len();
        let full = n / 8 * 8;
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        while i < full {
            let h = _mm_loadu_si128(sp.add(2 * i) as *const __m128i);
            _mm256_storeu_ps(dp.add(i), _mm256_cvtph_ps(h));
            i += 8;
        }
        for k in full..n {
            dst[k] = quantize::f16_bits_to_f32(u16::from_le_bytes([src[2 * k], src[2 * k + 1]]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(w: &[f32], rows: usize, x: &[f32], n_t: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * n_t];
        for r in 0..rows {
            for t in 0..n_t {
                let mut s = 0f64;
                for i in 0..n {
                    s += w[r * n + i] as f64 * x[t * n + i] as f64;
                }
                out[r * n_t + t] = s as f32;
            }
        }
        out
    }

    #[test]
    fn every_kernel_matches_naive_products_on_ragged_shapes() {
        // Shapes with remainders in rows, tokens and the lane count.
        for &(rows, n_t, n) in &[(7, 5, 37), (4, 4, 64), (9, 1, 100), (1, 9, 16), (8, 6, 576)] {
            let w: Vec<f32> = (0..rows * n)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0)
                .collect();
            let x: Vec<f32> = (0..n_t * n)
                .map(|i| ((i * 13 % 17) as f32 - 8.0) / 5.0)
                .collect();
            let expect = naive(&w, rows, &x, n_t, n);
            for k in [Kernel::Portable, Kernel::detect()] {
                // Token-major output with a wider row (ld = rows + 3) to check the stride.
                let ld = rows + 3;
                let mut out = vec![f32::NAN; ld * n_t];
                unsafe {
                    k.run(
                        w.as_ptr(),
                        n,
                        rows,
                        x.as_ptr(),
                        n,
                        n_t,
                        n,
                        out.as_mut_ptr(),
                        ld,
                    )
                };
                let got: Vec<f32> = (0..rows)
                    .flat_map(|r| (0..n_t).map(move |t| (r, t)))
                    .map(|(r, t)| out[t * ld + r])
                    .collect();
                for (a, b) in got.iter().zip(&expect) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{k:?}: {a} vs {b}");
                }
            }
            // Strided operands: the same rows read as the first n/2 values of every row.
            let h = n / 2;
            let mut out = vec![0f32; n_t * rows];
            gemm_abt(&w, n, rows, &x, n, n_t, h, &mut out, rows);
            for r in 0..rows {
                for t in 0..n_t {
                    let e: f32 = (0..h).map(|i| w[r * n + i] * x[t * n + i]).sum();
                    assert!((out[t * rows + r] - e).abs() <= 1e-4 * (1.0 + e.abs()));
                }
            }
        }
    }

    /// Single-thread throughput of the block dot products against the dequantize-then-FMA path
    /// they replaced, for every type with a block kernel, in the shapes of one task of a 7B
    /// model's product (16 rows of 4096 values × 256 tokens). Not a test (docs/performance.md
    /// quotes it): `cargo test --release -p runtime-check --lib
    /// block_kernel_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn block_kernel_throughput() {
        use crate::qdot::tests::{values, weights, TYPES};
        let (n_in, n_rows, n_t) = (4096, 16, 256);
        let best = |f: &mut dyn FnMut()| {
            (0..7)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        let x = values(n_t * n_in, 5);
        let macs = (n_in * n_rows * n_t) as f64 / 1e9;
        for ty in TYPES {
            let w = weights(ty, n_in, n_rows, false);
            let fmt = ActFormat::for_weight(ty).unwrap();
            let k = QKernel::detect();
            let mut out = vec![0f32; n_t * n_rows];
            // The activations are quantized once per product (for all its rows), not per tile.
            let mut acts = QuantActs::quantize(fmt, &x, n_t, n_in);
            let tquant = best(&mut || acts = QuantActs::quantize(fmt, &x, n_t, n_in));
            let tq = best(&mut || k.matmul_tile(ty, n_in, &w, n_rows, &acts, &mut out));
            let mut wf = vec![0f32; n_rows * n_in];
            let tf = best(&mut || {
                quantize::dequantize_into(ty, &w, &mut wf).unwrap();
                // SAFETY: wf holds n_rows rows and x n_t rows of n_in values; out is n_t × n_rows.
                unsafe {
                    Kernel::detect().run(
                        wf.as_ptr(),
                        n_in,
                        n_rows,
                        x.as_ptr(),
                        n_in,
                        n_t,
                        n_in,
                        out.as_mut_ptr(),
                        n_rows,
                    )
                };
            });
            eprintln!(
                "{ty}: block dot products {:.1} G MAC/s, dequantize + f32 FMA {:.1} G MAC/s; \
                 quantizing the activations {:.0} M values/s",
                macs / tq,
                macs / tf,
                (n_t * n_in) as f64 / tquant / 1e6
            );
        }
    }
}
