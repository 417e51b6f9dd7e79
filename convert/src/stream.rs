//! The fast execution path of a conversion: tensor bytes go from the memory-mapped checkpoint
//! straight into reusable output buffers, in parallel, while a separate thread writes the
//! previous buffer to disk.
//!
//! Why a separate path: the straightforward way (widen the whole tensor to an `f32` vector,
//! transform it, encode it into another vector, write it) touches every value four times and
//! holds the largest tensor three times over. Every transform a decoder-only checkpoint needs
//! except `Transpose` only *selects rows* (head permutation, vocabulary truncation) or is
//! elementwise (`AddOne`), and every output type the converter writes (F32, F16, BF16, Q8_0) is
//! encoded value by value or in independent 32-value blocks. So any range of the output can be
//! computed on its own from the source bytes it comes from: [`RowSource`] describes that
//! mapping and [`RowSource::fill`] computes a range with exactly the arithmetic of the simple
//! path (`widen` → transforms → `encode` in `pipeline.rs`), which stays the reference and the
//! fallback for everything else.

use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::OnceLock;

use gguf::{GgmlType, GgufWriter, WriteError};
use rayon::prelude::*;

use crate::source::SourceDtype;

/// Values per unit of work: Q8_0's block size, so that no block is ever split between two
/// pieces. The other output types are per value and accept any multiple of it.
const UNIT: usize = 32;

/// Target size of one output buffer handed to the writer thread. Large enough that the writes
/// are efficient and the per-buffer parallel split is cheap, small enough that the buffers in
/// flight are a rounding error next to the model.
pub(crate) const CHUNK_BYTES: usize = 8 << 20;

/// Output buffers in circulation: one being filled, one being written, one queued. More does
/// not help: filling and writing alternate on the same two cores.
const POOL: usize = 3;

/// What happens to every value between reading and encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ElemOp {
    Identity,
    /// `v + 1` in f32 (Gemma-style norm weights stored as offsets).
    AddOne,
    /// `v + 1` rounded through f16, as the reference path does for f16 sources.
    AddOneF16Exact,
}

/// One output tensor as a selection of source rows.
///
/// Output row `r` (of `row_len` values) is source row `map[r]`, or source row `r` when `map` is
/// `None`; every value then goes through `op` and is encoded as `out`.
pub(crate) struct RowSource<'a> {
    pub src: &'a [u8],
    pub dtype: SourceDtype,
    pub row_len: usize,
    pub n_rows: usize,
    pub map: Option<Vec<usize>>,
    pub op: ElemOp,
    pub out: GgmlType,
}

/// True for the output types [`RowSource`] can encode.
pub(crate) fn supports(out: GgmlType) -> bool {
    matches!(
        out,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0
    )
}

impl RowSource<'_> {
    /// Checks that the description is consistent with the source bytes, so that [`fill`]
    /// cannot index out of bounds. A failure means the caller must use the reference path.
    ///
    /// [`fill`]: RowSource::fill
    pub fn is_valid(&self) -> bool {
        let Some(n) = self.row_len.checked_mul(self.n_rows) else {
            return false;
        };
        let src_rows = (self.src.len() / self.dtype.size())
            .checked_div(self.row_len)
            .unwrap_or(0);
        let rows_ok = match &self.map {
            None => n
                .checked_mul(self.dtype.size())
                .is_some_and(|b| b <= self.src.len()),
            Some(m) => m.len() == self.n_rows && m.iter().all(|&r| r < src_rows),
        };
        let blocks_ok = match self.out {
            // A Q8_0 block never straddles two rows or the end of the tensor.
            GgmlType::Q8_0 => n % UNIT == 0 && (self.map.is_none() || self.row_len % UNIT == 0),
            _ => true,
        };
        supports(self.out) && rows_ok && blocks_ok
    }

    pub fn n_elements(&self) -> usize {
        self.row_len * self.n_rows
    }

    /// Encoded size of `n` values (`n` a multiple of [`UNIT`] for Q8_0).
    pub fn out_bytes(&self, n: usize) -> usize {
        match self.out {
            GgmlType::Q8_0 => n / UNIT * 34,
            GgmlType::F32 => n * 4,
            _ => n * 2,
        }
    }

    /// Encoded size of the whole tensor.
    #[cfg(test)]
    pub fn total_bytes(&self) -> usize {
        self.out_bytes(self.n_elements())
    }

    /// How many values make `bytes` bytes of output (rounded down to whole units).
    pub fn elements_in(&self, bytes: usize) -> usize {
        let unit_bytes = self.out_bytes(UNIT);
        (bytes / unit_bytes).max(1) * UNIT
    }

    /// Encodes the values `first..` into `dst` (its length decides how many), splitting the
    /// work over the rayon pool. `first` must be a multiple of [`UNIT`]. The result does not
    /// depend on the number of threads: every value (every Q8_0 block) is computed alone.
    pub fn fill(&self, first: usize, dst: &mut [u8]) {
        let threads = rayon::current_num_threads().max(1);
        let unit_bytes = self.out_bytes(UNIT);
        let units = dst.len().div_ceil(unit_bytes);
        // A few pieces per thread balance uneven progress; at least 64 KiB of output per
        // piece keeps the scheduling cost negligible.
        let per_piece = units
            .div_ceil(threads * 4)
            .max((64 << 10) / unit_bytes)
            .max(1);
        dst.par_chunks_mut(per_piece * unit_bytes)
            .enumerate()
            .for_each(|(i, piece)| self.fill_seq(first + i * per_piece * UNIT, piece));
    }

    /// [`fill`](RowSource::fill) on the current thread.
    fn fill_seq(&self, mut e: usize, mut dst: &mut [u8]) {
        let size = self.dtype.size();
        while !dst.is_empty() {
            let (row, col) = match self.map {
                // Without a row map the output is a prefix of the source: one long row.
                None => (0, e),
                Some(_) => (e / self.row_len, e % self.row_len),
            };
            let src_row = self.map.as_ref().map_or(row, |m| m[row]);
            let room = match self.map {
                None => self.n_elements() - e,
                Some(_) => self.row_len - col,
            };
            let wanted = match self.out {
                GgmlType::Q8_0 => dst.len() / 34 * UNIT,
                GgmlType::F32 => dst.len() / 4,
                _ => dst.len() / 2,
            };
            let n = room.min(wanted);
            if n == 0 {
                // Only reachable with a `dst` that is not a whole number of values (or runs
                // past the tensor), which `Plan::write` never passes; stop rather than spin.
                debug_assert!(false, "fill past the end or with a partial value");
                return;
            }
            let start = (src_row * self.row_len + col) * size;
            let (head, tail) = dst.split_at_mut(self.out_bytes(n));
            convert_run(
                &self.src[start..start + n * size],
                self.dtype,
                self.op,
                self.out,
                head,
            );
            dst = tail;
            e += n;
        }
    }
}

/// Converts `src` (whole values of `dtype`) into `dst` (exactly their encoded size).
///
/// On x86-64 CPUs with AVX2 the same code is compiled a second time with AVX2 enabled, where
/// the compiler turns the per-value loops into 8-wide vector code. Rust never contracts or
/// reassociates float operations, so both builds compute the same bits.
fn convert_run(src: &[u8], dtype: SourceDtype, op: ElemOp, out: GgmlType, dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { convert_run_avx2(src, dtype, op, out, dst) };
    }
    convert_run_impl::<false>(src, dtype, op, out, dst)
}

/// [`convert_run_impl`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn convert_run_avx2(
    src: &[u8],
    dtype: SourceDtype,
    op: ElemOp,
    out: GgmlType,
    dst: &mut [u8],
) {
    convert_run_impl::<true>(src, dtype, op, out, dst)
}

/// The conversion kernels. `WIDE`: compute the 16-bit float conversions arithmetically
/// (vectorizes well with wide registers) instead of through 64K-entry tables (faster in
/// scalar code). Both give the reference's bits; see the tests.
#[inline(always)]
fn convert_run_impl<const WIDE: bool>(
    src: &[u8],
    dtype: SourceDtype,
    op: ElemOp,
    out: GgmlType,
    dst: &mut [u8],
) {
    if op == ElemOp::Identity {
        match (dtype, out) {
            (SourceDtype::F32, GgmlType::F32) => return dst.copy_from_slice(src),
            (SourceDtype::BF16, GgmlType::Q8_0) => return q8_0_from_bf16(src, dst),
            (SourceDtype::BF16, GgmlType::BF16) => return bf16_requantize(src, dst),
            (SourceDtype::BF16, GgmlType::F16) if WIDE => {
                return map_u16(src, dst, |h| quantize::f32_to_f16_bits(bf16_to_f32(h)))
            }
            (SourceDtype::BF16 | SourceDtype::F16, GgmlType::F16 | GgmlType::BF16) if !WIDE => {
                let table = table16(dtype, out);
                return map_u16(src, dst, |h| table[h as usize]);
            }
            _ => {}
        }
    }
    // Everything else goes through f32 in cache-sized blocks: the same per-value functions as
    // the reference path, without a tensor-sized intermediate.
    const BLOCK: usize = 1024;
    let mut scratch = [0f32; BLOCK];
    let size = dtype.size();
    let n = src.len() / size;
    let mut done = 0;
    while done < n {
        let k = (n - done).min(BLOCK);
        let vals = &mut scratch[..k];
        widen_into::<WIDE>(&src[done * size..(done + k) * size], dtype, vals);
        apply_op(vals, op);
        let (o0, o1) = match out {
            GgmlType::Q8_0 => (done / UNIT * 34, (done + k) / UNIT * 34),
            GgmlType::F32 => (done * 4, (done + k) * 4),
            _ => (done * 2, (done + k) * 2),
        };
        encode_into(vals, out, &mut dst[o0..o1]);
        done += k;
    }
}

#[inline(always)]
fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Source bytes → f32, exactly as `pipeline::widen`.
#[inline(always)]
fn widen_into<const WIDE: bool>(src: &[u8], dtype: SourceDtype, dst: &mut [f32]) {
    match dtype {
        SourceDtype::F32 => {
            for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        SourceDtype::BF16 => {
            for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        SourceDtype::F16 if WIDE => {
            for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = quantize::f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        SourceDtype::F16 => {
            let t = f16_to_f32_table();
            for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = t[u16::from_le_bytes([b[0], b[1]]) as usize];
            }
        }
    }
}

/// The elementwise transform, exactly as `Plan::apply_transforms`.
#[inline(always)]
fn apply_op(vals: &mut [f32], op: ElemOp) {
    match op {
        ElemOp::Identity => {}
        ElemOp::AddOne => vals.iter_mut().for_each(|v| *v += 1.0),
        ElemOp::AddOneF16Exact => vals
            .iter_mut()
            .for_each(|v| *v = quantize::f16_bits_to_f32(quantize::f32_to_f16_bits(*v + 1.0))),
    }
}

/// f32 → output bytes, exactly as `pipeline::encode` (Q8_0: `vals.len()` a multiple of 32).
#[inline(always)]
fn encode_into(vals: &[f32], out: GgmlType, dst: &mut [u8]) {
    match out {
        GgmlType::F32 => {
            for (o, v) in dst.chunks_exact_mut(4).zip(vals) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (o, v) in dst.chunks_exact_mut(2).zip(vals) {
                o.copy_from_slice(&quantize::f32_to_f16_bits(*v).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (o, v) in dst.chunks_exact_mut(2).zip(vals) {
                o.copy_from_slice(&quantize::f32_to_bf16_bits(*v).to_le_bytes());
            }
        }
        _ => {
            for (o, x) in dst.chunks_exact_mut(34).zip(vals.chunks_exact(UNIT)) {
                q8_0_block(x, o);
            }
        }
    }
}

/// Largest |x·id| the fast Q8_0 rounding accepts. Normally |x·id| ≤ 127·(1 + ε); only a
/// subnormal scale makes it larger (1/d rounds far from 127/amax), and beyond 2³¹ the integer
/// steps of [`round_q8`] would overflow where the reference saturates.
const SCALED_MAX: f32 = 1.0e9;

/// One Q8_0 block, bit-identical to `quantize::quantize(Q8_0, ..)` (ggml's
/// `quantize_row_q8_0_ref`).
///
/// The reference takes the maximum of |x| sequentially and rounds with `roundf`, which the
/// compiler can neither reorder nor vectorize. For a block of finite values the maximum does
/// not depend on the order (all |x| are ≥ +0 and comparable), and for |v| < 2³¹
/// `roundf(v) = trunc(v) ± (|v − trunc(v)| ≥ ½)` exactly, because `v − trunc(v)` is exact. Other
/// blocks go to the quantize crate itself.
#[inline(always)]
fn q8_0_block(x: &[f32], y: &mut [u8]) {
    let mut lanes = [0f32; 8];
    let mut bad = false;
    for c in x.chunks_exact(8) {
        for (l, v) in lanes.iter_mut().zip(c) {
            let a = v.abs();
            *l = if *l > a { *l } else { a };
            bad |= !v.is_finite();
        }
    }
    let amax = lanes.iter().fold(0f32, |m, &a| if m > a { m } else { a });
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    // False for NaN too.
    let fits = amax * id < SCALED_MAX;
    if bad || !fits {
        // Exact reference for the rare odd block: NaN (order-dependent maximum), infinities,
        // or a scale so small (subnormal `d`) that 1/d overflows and x/d leaves i32's range.
        if quantize::quantize_into(GgmlType::Q8_0, x, UNIT, None, y).is_err() {
            y.fill(0);
        }
        return;
    }
    y[..2].copy_from_slice(&quantize::f32_to_f16_bits(d).to_le_bytes());
    for (q, &v) in y[2..].iter_mut().zip(x) {
        *q = round_q8(v * id);
    }
}

/// bf16 → Q8_0, the hot path of `--outtype q8_0` on bf16 checkpoints; the same arithmetic as
/// [`q8_0_block`] on the widened values, with the maximum taken on the 16-bit patterns: for
/// finite values |x| orders like its bits, and `|x| ≥ 0x7f80` (as bits) means inf or NaN.
#[inline(always)]
fn q8_0_from_bf16(src: &[u8], dst: &mut [u8]) {
    for (b, y) in src.chunks_exact(2 * UNIT).zip(dst.chunks_exact_mut(34)) {
        // Fixed-size arrays let the compiler unroll and vectorize the per-block loops.
        let (Ok(b), Ok(y)) = (<&[u8; 2 * UNIT]>::try_from(b), <&mut [u8; 34]>::try_from(y)) else {
            return;
        };
        let mut h = [0u16; UNIT];
        for (j, v) in h.iter_mut().enumerate() {
            *v = u16::from_le_bytes([b[2 * j], b[2 * j + 1]]);
        }
        let mut m = 0u16;
        for v in h {
            m = m.max(v & 0x7fff);
        }
        let amax = bf16_to_f32(m);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let fits = amax * id < SCALED_MAX;
        if m >= 0x7f80 || !fits {
            let x = h.map(bf16_to_f32);
            q8_0_block(&x, y);
            continue;
        }
        let mut q = [0u8; UNIT];
        for (q, v) in q.iter_mut().zip(h) {
            *q = round_q8(bf16_to_f32(v) * id);
        }
        y[..2].copy_from_slice(&quantize::f32_to_f16_bits(d).to_le_bytes());
        y[2..].copy_from_slice(&q);
    }
}

/// `roundf(s)` as a byte (two's complement, as the reference's `(int8_t)` cast), for finite
/// |s| < [`SCALED_MAX`].
#[inline(always)]
fn round_q8(s: f32) -> u8 {
    let t = s as i32;
    let frac = s - t as f32;
    (t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32) as u8
}

/// bf16 → bf16 through f32, as the reference path does: the identity except that a NaN gets
/// its quiet bit forced (`f32_to_bf16_bits`).
#[inline(always)]
fn bf16_requantize(src: &[u8], dst: &mut [u8]) {
    map_u16(src, dst, |h| if h & 0x7fff > 0x7f80 { h | 0x40 } else { h })
}

/// Applies `f` to every little-endian u16 of `src`, writing `dst`.
#[inline(always)]
fn map_u16(src: &[u8], dst: &mut [u8], f: impl Fn(u16) -> u16) {
    for (o, b) in dst.chunks_exact_mut(2).zip(src.chunks_exact(2)) {
        o.copy_from_slice(&f(u16::from_le_bytes([b[0], b[1]])).to_le_bytes());
    }
}

/// A 16-bit source type to a 16-bit output type through f32, for every one of the 65536 inputs.
///
/// In scalar code a table lookup is faster than the software f32 → f16 rounding (ggml's bit
/// manipulation, which the F16C instructions do not reproduce for NaN), and the table is built
/// with the very functions of the reference path, so it is exact by construction.
fn table16(dtype: SourceDtype, out: GgmlType) -> &'static [u16; 65536] {
    fn build(widen: fn(u16) -> f32, narrow: fn(f32) -> u16) -> Box<[u16; 65536]> {
        let mut t = Box::new([0u16; 65536]);
        for (i, v) in t.iter_mut().enumerate() {
            *v = narrow(widen(i as u16));
        }
        t
    }
    static TABLES: [OnceLock<Box<[u16; 65536]>>; 4] = [const { OnceLock::new() }; 4];
    let bf = quantize::bf16_bits_to_f32 as fn(u16) -> f32;
    let hf = quantize::f16_bits_to_f32 as fn(u16) -> f32;
    let to_h = quantize::f32_to_f16_bits as fn(f32) -> u16;
    let to_b = quantize::f32_to_bf16_bits as fn(f32) -> u16;
    let (slot, w, n) = match (dtype, out) {
        (SourceDtype::BF16, GgmlType::F16) => (0, bf, to_h),
        (SourceDtype::BF16, _) => (1, bf, to_b),
        (_, GgmlType::F16) => (2, hf, to_h),
        _ => (3, hf, to_b),
    };
    TABLES[slot].get_or_init(|| build(w, n))
}

/// f16 bits → f32 for every input (the software conversion costs a dozen operations a value).
fn f16_to_f32_table() -> &'static [f32; 65536] {
    static TABLE: OnceLock<Box<[f32; 65536]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0f32; 65536]);
        for (i, v) in t.iter_mut().enumerate() {
            *v = quantize::f16_bits_to_f32(i as u16);
        }
        t
    })
}

// ------------------------------------------------------------------------------------------
// The writer thread
// ------------------------------------------------------------------------------------------

/// A piece of output on its way to the writer thread.
pub(crate) enum Piece {
    /// Bytes of the tensor at this index of the header (several pieces may follow each other).
    /// `recycle`: the buffer came from [`Outbox::buffer`] and goes back to the pool.
    Data {
        tensor: usize,
        bytes: Vec<u8>,
        recycle: bool,
    },
    /// The tensor is complete (after its last `Data`, or alone for an empty tensor).
    End { tensor: usize },
}

/// The producing end: hands out recycled buffers and queues filled ones.
pub(crate) struct Outbox {
    tx: std::sync::mpsc::SyncSender<Piece>,
    free: Receiver<Vec<u8>>,
}

impl Outbox {
    /// A buffer of `len` bytes, reusing one the writer has finished with. `None` when the
    /// writer has stopped (it failed; its error is reported by [`run_writer`]).
    pub fn buffer(&self, len: usize) -> Option<Vec<u8>> {
        let mut b = self.free.recv().ok()?;
        // Every byte is overwritten by `fill`; resizing only zeroes newly grown capacity.
        b.resize(len, 0);
        Some(b)
    }

    /// Queues a piece; false when the writer has stopped.
    pub fn send(&self, piece: Piece) -> bool {
        self.tx.send(piece).is_ok()
    }
}

/// Runs `produce` on the current thread and a writer on another, connected by a bounded pool
/// of buffers, so that reading and converting one buffer overlaps writing the previous one.
///
/// `on_tensor(i)` runs on the writer thread once tensor `i` is fully written. Returns the
/// writer when everything produced was written, else the first error (the producer's, or the
/// writer's when the producer only stopped because the writer had).
pub(crate) fn run_writer<W, E, F>(
    mut writer: GgufWriter<W>,
    names: &[&str],
    on_tensor: &(dyn Fn(usize) + Sync),
    produce: F,
    write_err: impl Fn(WriteError) -> E,
) -> Result<GgufWriter<W>, E>
where
    W: std::io::Write + Send,
    F: FnOnce(&Outbox) -> Result<(), E>,
    E: Send,
{
    let (tx, rx) = sync_channel::<Piece>(POOL);
    let (free_tx, free_rx): (Sender<Vec<u8>>, Receiver<Vec<u8>>) = channel();
    for _ in 0..POOL {
        // Cannot fail: the receiver is alive.
        let _ = free_tx.send(Vec::new());
    }
    std::thread::scope(|s| {
        let handle = s.spawn(move || -> Result<GgufWriter<W>, WriteError> {
            for piece in rx {
                match piece {
                    Piece::Data {
                        tensor,
                        bytes,
                        recycle,
                    } => {
                        check_next(&writer, names, tensor)?;
                        writer.write_bytes(&bytes)?;
                        if recycle {
                            // The producer may be gone already; then the buffer is dropped.
                            let _ = free_tx.send(bytes);
                        }
                    }
                    Piece::End { tensor } => {
                        // Pieces that add up to the tensor's size complete it in
                        // `write_bytes`; only an empty tensor is still current here.
                        if let Some(info) = writer.current() {
                            if info.name == names[tensor] {
                                if info.n_bytes() != 0 {
                                    return Err(WriteError::Sequence {
                                        tensor: names[tensor].to_string(),
                                        message: "only part of the tensor was produced".into(),
                                    });
                                }
                                writer.write_tensor(names[tensor], &[])?;
                            }
                        }
                        on_tensor(tensor);
                    }
                }
            }
            Ok(writer)
        });
        let outbox = Outbox { tx, free: free_rx };
        let produced = produce(&outbox);
        drop(outbox);
        let written = match handle.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        };
        produced?;
        written.map_err(write_err)
    })
}

/// The writer only accepts the bytes of the tensor it expects next.
fn check_next<W: std::io::Write>(
    writer: &GgufWriter<W>,
    names: &[&str],
    tensor: usize,
) -> Result<(), WriteError> {
    match writer.current() {
        Some(info) if info.name == names[tensor] => Ok(()),
        Some(info) => Err(WriteError::Sequence {
            tensor: names[tensor].to_string(),
            message: format!("written out of order: '{}' comes next", info.name),
        }),
        None => Err(WriteError::Sequence {
            tensor: names[tensor].to_string(),
            message: "not in the header".into(),
        }),
    }
}

/// Page-cache advice on the checkpoint's mapping: every slice the pipeline advises is borrowed
/// from a shard's read-only `Mmap`, which is what [`gguf::pages::advise`] requires.
pub(crate) fn advise(bytes: &[u8], advice: Advice) {
    // SAFETY: callers pass bytes of a safetensors shard's read-only file mapping
    // (`source::Checkpoint`), never heap memory.
    unsafe { gguf::pages::advise(bytes, advice) }
}

pub(crate) use gguf::pages::Advice;

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference path of `pipeline.rs`, value by value.
    fn reference(src: &[u8], dtype: SourceDtype, op: ElemOp, out: GgmlType) -> Vec<u8> {
        let vals: Vec<f32> = match dtype {
            SourceDtype::F32 => src
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            SourceDtype::F16 => src
                .chunks_exact(2)
                .map(|b| quantize::f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            SourceDtype::BF16 => src
                .chunks_exact(2)
                .map(|b| quantize::bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
        };
        let vals: Vec<f32> = vals
            .into_iter()
            .map(|v| match op {
                ElemOp::Identity => v,
                ElemOp::AddOne => v + 1.0,
                ElemOp::AddOneF16Exact => {
                    quantize::f16_bits_to_f32(quantize::f32_to_f16_bits(v + 1.0))
                }
            })
            .collect();
        match out {
            GgmlType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => vals
                .iter()
                .flat_map(|v| quantize::f32_to_f16_bits(*v).to_le_bytes())
                .collect(),
            GgmlType::BF16 => vals
                .iter()
                .flat_map(|v| quantize::f32_to_bf16_bits(*v).to_le_bytes())
                .collect(),
            ty => quantize::quantize(ty, &vals, UNIT, None).unwrap(),
        }
    }

    /// Every 16-bit pattern (all NaNs, infinities, subnormals, signed zeros), then random
    /// values of realistic size and exact Q8_0 rounding ties.
    fn corpus(dtype: SourceDtype) -> Vec<u8> {
        let mut out = Vec::new();
        match dtype {
            SourceDtype::F32 => {
                let mut s = 0x2545_f491_u32;
                for i in 0..65536u32 {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    let v = match i % 4 {
                        0 => f32::from_bits(s),
                        1 => (s as f32 / u32::MAX as f32 - 0.5) * 0.1,
                        2 => (i % 255) as f32 - 127.0 + 0.5, // ties after scaling by 1
                        _ => f32::from_bits((i << 16) | (s & 0xffff)),
                    };
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            _ => {
                for i in 0..=u16::MAX {
                    out.extend_from_slice(&i.to_le_bytes());
                }
                // Blocks of ordinary values (the all-patterns part has NaN in most blocks).
                let mut s = 12345u32;
                for _ in 0..65536 {
                    s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    let v = ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.2;
                    let h = match dtype {
                        SourceDtype::BF16 => quantize::f32_to_bf16_bits(v),
                        _ => quantize::f32_to_f16_bits(v),
                    };
                    out.extend_from_slice(&h.to_le_bytes());
                }
            }
        }
        out
    }

    #[test]
    fn every_path_matches_the_reference_arithmetic() {
        for dtype in [SourceDtype::F32, SourceDtype::F16, SourceDtype::BF16] {
            let src = corpus(dtype);
            for op in [ElemOp::Identity, ElemOp::AddOne, ElemOp::AddOneF16Exact] {
                for out in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0] {
                    let want = reference(&src, dtype, op, out);
                    let rs = RowSource {
                        src: &src,
                        dtype,
                        row_len: src.len() / dtype.size(),
                        n_rows: 1,
                        map: None,
                        op,
                        out,
                    };
                    assert!(rs.is_valid());
                    let mut got = vec![0u8; rs.total_bytes()];
                    rs.fill(0, &mut got);
                    let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
                    assert_eq!(
                        first_diff, None,
                        "{dtype:?} {op:?} → {out:?}: first differing byte"
                    );
                    assert_eq!(got.len(), want.len());
                    // Both kernel variants, whichever one the CPU selects above.
                    for wide in [false, true] {
                        let mut got = vec![0u8; want.len()];
                        if wide {
                            convert_run_impl::<true>(&src, dtype, op, out, &mut got);
                        } else {
                            convert_run_impl::<false>(&src, dtype, op, out, &mut got);
                        }
                        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
                        assert_eq!(first_diff, None, "{dtype:?} {op:?} → {out:?}, wide {wide}");
                    }
                }
            }
        }
    }

    #[test]
    fn q8_0_fast_block_matches_quantize_on_ties_and_extremes() {
        // Values whose scaled form lands exactly on .5 (amax 127 → id 1), and a block that
        // overshoots 127 by rounding; both are where a wrong rounding rule would show.
        let mut blocks: Vec<[f32; 32]> = Vec::new();
        let mut b = [0f32; 32];
        for (j, v) in b.iter_mut().enumerate() {
            *v = j as f32 - 15.5;
        }
        b[31] = 127.0;
        blocks.push(b);
        let mut c = [0f32; 32];
        for (j, v) in c.iter_mut().enumerate() {
            *v = (j as f32 * 0.37 - 5.0) * 1e-39; // subnormals
        }
        blocks.push(c);
        blocks.push([0.0; 32]);
        blocks.push([-0.0; 32]);
        let mut d = [1e30f32; 32];
        d[3] = -3e38;
        blocks.push(d);
        for x in &blocks {
            let want = quantize::quantize(GgmlType::Q8_0, x, 32, None).unwrap();
            let mut got = [0u8; 34];
            q8_0_block(x, &mut got);
            assert_eq!(&got[..], &want[..], "block {x:?}");
        }
    }

    #[test]
    fn row_map_and_truncation_select_whole_rows() {
        // 4 rows of 64 bf16 values; output = rows 2, 0, 3 (a permutation, then truncation).
        let row_len = 64;
        let src: Vec<u8> = (0..4 * row_len)
            .flat_map(|i| quantize::f32_to_bf16_bits(i as f32 * 0.01 - 1.0).to_le_bytes())
            .collect();
        let map = vec![2usize, 0, 3];
        for out in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0] {
            let rs = RowSource {
                src: &src,
                dtype: SourceDtype::BF16,
                row_len,
                n_rows: 3,
                map: Some(map.clone()),
                op: ElemOp::Identity,
                out,
            };
            assert!(rs.is_valid());
            let gathered: Vec<u8> = map
                .iter()
                .flat_map(|&r| src[r * row_len * 2..(r + 1) * row_len * 2].to_vec())
                .collect();
            let want = reference(&gathered, SourceDtype::BF16, ElemOp::Identity, out);
            // In pieces of one Q8_0 block at a time, as the chunking of `Plan::write` may do.
            let mut got = vec![0u8; rs.total_bytes()];
            let unit = rs.out_bytes(UNIT);
            for (i, piece) in got.chunks_mut(unit).enumerate() {
                rs.fill(i * UNIT, piece);
            }
            assert_eq!(got, want, "{out:?}");
        }
    }

    /// `cargo test --release -p convert stream::tests::throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, not a check"]
    fn throughput() {
        let n = 1 << 26;
        let src: Vec<u8> = (0..n as u32)
            .flat_map(|i| {
                let v = ((i.wrapping_mul(2_654_435_761) >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
                    * 0.04;
                quantize::f32_to_bf16_bits(v).to_le_bytes()
            })
            .collect();
        for (dtype, out) in [
            (SourceDtype::BF16, GgmlType::F16),
            (SourceDtype::BF16, GgmlType::BF16),
            (SourceDtype::BF16, GgmlType::F32),
            (SourceDtype::BF16, GgmlType::Q8_0),
            (SourceDtype::F16, GgmlType::Q8_0),
        ] {
            let rs = RowSource {
                src: &src,
                dtype,
                row_len: n,
                n_rows: 1,
                map: None,
                op: ElemOp::Identity,
                out,
            };
            let mut dst = vec![0u8; rs.total_bytes()];
            rs.fill(0, &mut dst);
            let t = std::time::Instant::now();
            for _ in 0..3 {
                rs.fill(0, &mut dst);
            }
            let s = t.elapsed().as_secs_f64() / 3.0;
            eprintln!("{dtype:?} -> {out:?}: {:.2} Gvalues/s", n as f64 / s / 1e9);
        }
    }

    #[test]
    fn invalid_descriptions_are_refused() {
        let src = vec![0u8; 2 * 64];
        let mk = |row_len, n_rows, map: Option<Vec<usize>>, out| RowSource {
            src: &src,
            dtype: SourceDtype::BF16,
            row_len,
            n_rows,
            map,
            op: ElemOp::Identity,
            out,
        };
        assert!(mk(64, 1, None, GgmlType::Q8_0).is_valid());
        assert!(
            !mk(65, 1, None, GgmlType::F16).is_valid(),
            "longer than the source"
        );
        assert!(
            !mk(16, 2, Some(vec![0, 4]), GgmlType::F16).is_valid(),
            "row 4 of 4"
        );
        assert!(
            !mk(16, 2, Some(vec![0, 1]), GgmlType::Q8_0).is_valid(),
            "split block"
        );
        assert!(
            !mk(8, 1, None, GgmlType::Q4_0).is_valid(),
            "unsupported type"
        );
    }
}
