//! The data path of [`crate::model::quantize_file`]: reading, converting and writing overlap,
//! and memory stays at a few chunks whatever the size of the model.
//!
//! Why a dedicated engine: for Q8_0 or Q4_0 a value costs a few nanoseconds to quantize, so
//! quantizing a model is mostly moving bytes. The straightforward loop (expand a 64 MiB slab to
//! an f32 vector, quantize it into a fresh vector, decode that again to validate it, write it,
//! then start the next slab) spent most of its time zeroing freshly allocated pages, making extra
//! passes over memory and waiting for the writes, and kept every input page it had touched
//! mapped (2.2 GB of resident memory for a 1.1 B F16 model). Here:
//!
//! * each rayon task expands ~16K values into a per-thread scratch buffer that stays in cache,
//!   checks them, quantizes them straight into the chunk's output buffer and checks the block
//!   scales of the result (no decode pass: see [`first_bad_output`]);
//! * output buffers come from a fixed pool and are recycled, and a writer thread writes chunk
//!   `k` while the pool converts chunk `k + 1` (a bounded pipeline, as `convert`'s stream.rs);
//! * the input mapping is read ahead (`MADV_WILLNEED`) and released after use
//!   (`MADV_DONTNEED`; the pages stay in the page cache), so resident memory does not grow with
//!   the model.
//!
//! Every row is computed alone from its own source bytes, so the output bytes do not depend on
//! the thread count or the chunk size, and the checks report the same first bad element as a
//! whole-slab pass would.

use std::cell::RefCell;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};

use gguf::{GgmlType, GgufWriter, WriteError};
use rayon::prelude::*;

use crate::mix::TensorPlan;
use crate::model::{QuantizeFileError, TensorReport};

/// Output buffers in circulation: one being filled, one being written, one queued. More does
/// not help: converting and writing share the same cores.
const POOL: usize = 3;

/// One tensor to produce.
pub(crate) struct Job<'a> {
    pub plan: &'a TensorPlan,
    /// The tensor's bytes in the input. Must lie in a read-only *file* mapping (every
    /// `GgufFile` is one): whole pages of it are released with `MADV_DONTNEED` once used, which
    /// on a file mapping only unmaps them (on anonymous memory it would zero them).
    pub src: &'a [u8],
    /// Imatrix weights for every expert matrix (`n_mat * ne0`), when used.
    pub weights: Option<&'a [f32]>,
    /// Reported through `progress` once the tensor is written.
    pub report: TensorReport,
}

/// What the producer hands to the writer thread.
enum Piece<'a> {
    /// Converted bytes of job `.0`: the first `.2` bytes of a pool buffer, handed back after.
    Owned(usize, Vec<u8>, usize),
    /// Bytes of job `.0` copied unchanged from the input mapping.
    Borrowed(usize, &'a [u8]),
    /// Job `.0` is complete.
    End(usize),
}

/// Why the producer stopped early.
enum Stop {
    /// A data error, reported as is.
    Data(QuantizeFileError),
    /// The writer thread is gone; its own error says why.
    WriterGone,
}

impl From<QuantizeFileError> for Stop {
    fn from(e: QuantizeFileError) -> Stop {
        Stop::Data(e)
    }
}

/// Writes every job's tensor, in order, through `w`, converting `chunk_values` values at a time.
/// Must run inside the rayon pool that should do the work. Calls `progress(index, count,
/// report)` after each tensor is written and returns the writer (ready for `finish`) and the
/// reports.
pub(crate) fn run<W: std::io::Write + Send>(
    w: GgufWriter<W>,
    jobs: &[Job<'_>],
    chunk_values: u64,
    progress: &mut (dyn FnMut(usize, usize, &TensorReport) + Send),
    write_err: &(dyn Fn(WriteError) -> QuantizeFileError + Sync),
) -> Result<(GgufWriter<W>, Vec<TensorReport>), QuantizeFileError> {
    let (tx, rx) = sync_channel::<Piece>(POOL);
    let (free_tx, free_rx): (Sender<Vec<u8>>, Receiver<Vec<u8>>) = channel();
    for _ in 0..POOL {
        let _ = free_tx.send(Vec::new());
    }
    std::thread::scope(|s| {
        let writer = s.spawn(move || write_pieces(w, jobs, rx, free_tx, progress));
        let produced = produce(jobs, chunk_values, &tx, &free_rx);
        drop(tx);
        let written = match writer.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        };
        match produced {
            Err(Stop::Data(e)) => Err(e),
            // Only reachable when the writer failed, and then its error is the one to report.
            Ok(()) | Err(Stop::WriterGone) => written.map_err(write_err),
        }
    })
}

/// The writer thread: writes the pieces in order, returns the buffers, reports each tensor.
fn write_pieces<W: std::io::Write>(
    mut w: GgufWriter<W>,
    jobs: &[Job<'_>],
    rx: Receiver<Piece<'_>>,
    free: Sender<Vec<u8>>,
    progress: &mut (dyn FnMut(usize, usize, &TensorReport) + Send),
) -> Result<(GgufWriter<W>, Vec<TensorReport>), WriteError> {
    let mut reports = Vec::with_capacity(jobs.len());
    for piece in rx {
        match piece {
            Piece::Owned(i, buf, len) => {
                write_piece(&mut w, &jobs[i].plan.name, &buf[..len])?;
                let _ = free.send(buf);
            }
            Piece::Borrowed(i, bytes) => {
                write_piece(&mut w, &jobs[i].plan.name, bytes)?;
                advise(bytes, Advice::DontNeed);
            }
            Piece::End(i) => {
                let name = &jobs[i].plan.name;
                if let Some(info) = w.current() {
                    if info.name == *name {
                        if info.n_bytes() != 0 {
                            return Err(WriteError::Sequence {
                                tensor: name.clone(),
                                message: "only part of the tensor was produced".into(),
                            });
                        }
                        // An empty tensor gets no pieces; record it in the file's sequence.
                        w.write_tensor(name, &[])?;
                    }
                }
                progress(i, jobs.len(), &jobs[i].report);
                reports.push(jobs[i].report.clone());
            }
        }
    }
    Ok((w, reports))
}

/// Appends part of a tensor, checking it is the one the header expects next.
fn write_piece<W: std::io::Write>(
    w: &mut GgufWriter<W>,
    name: &str,
    bytes: &[u8],
) -> Result<(), WriteError> {
    match w.current() {
        Some(info) if info.name == name => w.write_bytes(bytes),
        _ => Err(WriteError::Sequence {
            tensor: name.to_string(),
            message: "written out of order".into(),
        }),
    }
}

/// The producer: converts (or checks) chunk after chunk and queues them for the writer.
fn produce<'a>(
    jobs: &'a [Job<'a>],
    chunk_values: u64,
    tx: &std::sync::mpsc::SyncSender<Piece<'a>>,
    free: &Receiver<Vec<u8>>,
) -> Result<(), Stop> {
    for (i, job) in jobs.iter().enumerate() {
        let t = job.plan;
        let chunks = chunks(t, chunk_values);
        for (k, c) in chunks.iter().enumerate() {
            let src = &job.src[c.src_bytes(t)];
            // Start reading the next chunk from disk while this one is worked on (a no-op when
            // the file is in the page cache).
            match chunks.get(k + 1) {
                Some(next) => advise(&job.src[next.src_bytes(t)], Advice::WillNeed),
                None => {
                    if let Some(next) = jobs.get(i + 1) {
                        let n = next.src.len().min(c.src_bytes(t).len());
                        advise(&next.src[..n], Advice::WillNeed);
                    }
                }
            }
            if t.converts() {
                let mut buf = free.recv().map_err(|_| Stop::WriterGone)?;
                let len =
                    c.rows as usize * t.target_type.row_bytes(c.ne0 as u64).unwrap_or(0) as usize;
                if buf.len() < len {
                    buf.resize(len, 0);
                }
                let weights = job.weights.map(|w| &w[c.mat * c.ne0..][..c.ne0]);
                convert_chunk(t, c, src, weights, &mut buf[..len])?;
                // The source of this chunk is not needed again.
                advise(src, Advice::DontNeed);
                tx.send(Piece::Owned(i, buf, len))
                    .map_err(|_| Stop::WriterGone)?;
            } else {
                validate_input(&t.name, t.source_type, src, c.first)?;
                tx.send(Piece::Borrowed(i, src))
                    .map_err(|_| Stop::WriterGone)?;
            }
        }
        tx.send(Piece::End(i)).map_err(|_| Stop::WriterGone)?;
    }
    Ok(())
}

/// A run of whole rows of one matrix of a tensor.
struct Chunk {
    /// Row length (`ne[0]`).
    ne0: usize,
    /// Index of the expert matrix (`ne[2]` slice) the rows belong to.
    mat: usize,
    /// First row (global, over all matrices) and number of rows.
    row: u64,
    rows: u64,
    /// Index of the first element, for messages.
    first: u64,
}

impl Chunk {
    fn src_bytes(&self, t: &TensorPlan) -> std::ops::Range<usize> {
        let row_bytes = t.source_type.row_bytes(self.ne0 as u64).unwrap_or(0);
        (self.row * row_bytes) as usize..((self.row + self.rows) * row_bytes) as usize
    }
}

/// Splits a tensor into chunks of about `chunk_values` values: whole rows, never across two
/// expert matrices (each has its own imatrix weights).
fn chunks(t: &TensorPlan, chunk_values: u64) -> Vec<Chunk> {
    // A tensor with a zero dimension has no bytes (and no rows to slice).
    if t.dims.contains(&0) {
        return Vec::new();
    }
    let ne0 = t.dims.first().copied().unwrap_or(1).max(1);
    let n_rows: u64 = t.dims.iter().skip(1).product();
    let n_mat = t.dims.get(2).copied().unwrap_or(1).max(1);
    let rows_per_mat = n_rows / n_mat;
    let per_chunk = (chunk_values / ne0).max(1);
    let mut v = Vec::new();
    for mat in 0..n_mat {
        let mut r = 0;
        while r < rows_per_mat {
            let rows = per_chunk.min(rows_per_mat - r);
            let row = mat * rows_per_mat + r;
            v.push(Chunk {
                ne0: ne0 as usize,
                mat: mat as usize,
                row,
                rows,
                first: row * ne0,
            });
            r += rows;
        }
    }
    v
}

/// The first problem found in a range of rows (indices are elements from the chunk's start).
#[derive(Default)]
struct Outcome {
    /// A non-finite input value: (index, value).
    bad_input: Option<(usize, f32)>,
    /// A non-finite output value (f32/f16/bf16 targets) or block scale (quantized targets,
    /// whose index is then the block's first element): (index, value).
    bad_output: Option<(usize, f32)>,
    /// The quantizer refused its arguments (the same for every task).
    error: Option<crate::QuantizeError>,
}

impl Outcome {
    /// Keeps the first problem of each kind; `a` covers rows before `b`'s.
    fn merge(a: Outcome, b: Outcome) -> Outcome {
        Outcome {
            bad_input: a.bad_input.or(b.bad_input),
            bad_output: a.bad_output.or(b.bad_output),
            error: a.error.or(b.error),
        }
    }
}

thread_local! {
    /// Per-thread f32 expansion of the rows one task works on (~16K values: stays in cache).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Converts the rows of chunk `c` (`src`) into `out`, in parallel, with llama-quantize's checks:
/// finite input values (its loader validates every tensor), then finite output scales
/// (`ggml_validate_row_data`). Within a chunk an input problem is reported before an output one,
/// each at its first element, as a whole-chunk expand → quantize → validate sequence would.
fn convert_chunk(
    t: &TensorPlan,
    c: &Chunk,
    src: &[u8],
    weights: Option<&[f32]>,
    out: &mut [u8],
) -> Result<(), QuantizeFileError> {
    let ne0 = c.ne0;
    let in_row = t.source_type.row_bytes(ne0 as u64).unwrap_or(0) as usize;
    let out_row = t.target_type.row_bytes(ne0 as u64).unwrap_or(0) as usize;
    if in_row == 0 || out_row == 0 || src.is_empty() {
        return Ok(());
    }
    let rpt = crate::rows_per_task(ne0);
    let outcome = out
        .par_chunks_mut(out_row * rpt)
        .zip(src.par_chunks(in_row * rpt))
        .enumerate()
        .map(|(k, (o, s))| {
            let base = k * rpt * ne0;
            let mut r = SCRATCH.with(|cell| {
                let mut scratch = cell.borrow_mut();
                convert_rows(
                    t.source_type,
                    t.target_type,
                    ne0,
                    s,
                    weights,
                    o,
                    &mut scratch,
                )
            });
            r.bad_input = r.bad_input.map(|(i, v)| (base + i, v));
            r.bad_output = r.bad_output.map(|(i, v)| (base + i, v));
            r
        })
        .reduce(Outcome::default, Outcome::merge);
    if let Some((i, v)) = outcome.bad_input {
        return Err(QuantizeFileError::InvalidInput {
            tensor: t.name.clone(),
            what: non_finite_message(t.source_type, c.first + i as u64, v),
        });
    }
    if let Some(e) = outcome.error {
        return Err(QuantizeFileError::Unsupported {
            tensor: t.name.clone(),
            from: t.source_type,
            to: t.target_type,
            message: e.to_string(),
        });
    }
    if let Some((i, v)) = outcome.bad_output {
        return Err(QuantizeFileError::InvalidOutput {
            tensor: t.name.clone(),
            ty: t.target_type,
            what: bad_output_message(t.target_type, c.first + i as u64, v),
        });
    }
    Ok(())
}

/// One task: expand `src` (whole rows) into `scratch`, check, quantize into `out`, check.
fn convert_rows(
    from: GgmlType,
    to: GgmlType,
    ne0: usize,
    src: &[u8],
    weights: Option<&[f32]>,
    out: &mut [u8],
    scratch: &mut Vec<f32>,
) -> Outcome {
    let n = src.len() / from.block_bytes() * from.block_size();
    if scratch.len() < n {
        scratch.resize(n, 0.0);
    }
    let values = &mut scratch[..n];
    if let Err(e) = crate::dequantize_into(from, src, values) {
        return Outcome {
            error: Some(e),
            ..Outcome::default()
        };
    }
    if let Some(i) = first_non_finite(values) {
        return Outcome {
            bad_input: Some((i, values[i])),
            ..Outcome::default()
        };
    }
    if let Err(e) = crate::quantize_into(to, values, ne0, weights, out) {
        return Outcome {
            error: Some(e),
            ..Outcome::default()
        };
    }
    Outcome {
        bad_output: first_bad_output(to, out, scratch),
        ..Outcome::default()
    }
}

/// Index of the first NaN/Inf. The scan has no early exit, so it vectorizes; the position is
/// only searched for when there is one.
pub(crate) fn first_non_finite(values: &[f32]) -> Option<usize> {
    #[inline(always)]
    fn any_non_finite(values: &[f32]) -> bool {
        values.iter().fold(false, |bad, v| {
            bad | (v.to_bits() & 0x7f80_0000 == 0x7f80_0000)
        })
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(values: &[f32]) -> bool {
            any_non_finite(values)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            if !unsafe { avx2(values) } {
                return None;
            }
            return values.iter().position(|v| !v.is_finite());
        }
    }
    if !any_non_finite(values) {
        return None;
    }
    values.iter().position(|v| !v.is_finite())
}

/// Offsets of the f16 scales of one block, for the types whose every decoded value is finite
/// exactly when those scales are: the other fields are small integers, so a finite scale gives
/// finite values, and a NaN/Inf scale makes every value of the block NaN or ±Inf (0·Inf is NaN).
fn scale_offsets(ty: GgmlType) -> Option<&'static [usize]> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS | Q1_0 | Q2_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        TQ1_0 => &[52],
        TQ2_0 => &[64],
        _ => return None,
    })
}

/// `ggml_validate_row_data` on quantized output: the index of the first element whose decoded
/// value is not finite. For the types of [`scale_offsets`] only the block scales are read (no
/// decode pass; the result is the same, see the tests); other types are decoded into `scratch`.
/// Returns the index and, for f32/f16/bf16, the value (NaN for quantized types).
fn first_bad_output(ty: GgmlType, out: &[u8], scratch: &mut Vec<f32>) -> Option<(usize, f32)> {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => non_finite_plain(ty, out),
        _ => match scale_offsets(ty) {
            Some(offsets) => out
                .chunks_exact(ty.block_bytes())
                .position(|b| {
                    offsets
                        .iter()
                        .any(|&o| u16::from_le_bytes([b[o], b[o + 1]]) & 0x7c00 == 0x7c00)
                })
                .map(|blk| (blk * ty.block_size(), f32::NAN)),
            None => {
                let n = out.len() / ty.block_bytes() * ty.block_size();
                if scratch.len() < n {
                    scratch.resize(n, 0.0);
                }
                match crate::dequantize_into(ty, out, &mut scratch[..n]) {
                    Ok(()) => first_non_finite(&scratch[..n]).map(|i| (i, f32::NAN)),
                    // Cannot happen for whole rows; report the start rather than nothing.
                    Err(_) => Some((0, f32::NAN)),
                }
            }
        },
    }
}

fn bad_output_message(ty: GgmlType, index: u64, value: f32) -> String {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            format!("{value} at element {index} (the value does not fit {ty})")
        }
        _ => format!(
            "a non-finite block scale (element {index}); the input values are too large for {ty}"
        ),
    }
}

fn non_finite_message(ty: GgmlType, index: u64, value: f32) -> String {
    if ty.is_quantized() {
        format!("non-finite value {value} at element {index} after decoding its {ty} blocks (a NaN or Inf scale)")
    } else {
        format!("{ty} value {value} at element {index} (NaN and Inf are not allowed)")
    }
}

/// `ggml_validate_row_data` for rows copied unchanged (`first` is the index of the first
/// element, for messages).
fn validate_input(
    name: &str,
    ty: GgmlType,
    src: &[u8],
    first: u64,
) -> Result<(), QuantizeFileError> {
    use GgmlType::*;
    let bad = match ty {
        F32 | F16 | BF16 => {
            // In parallel, whole values per piece; the first bad piece holds the first bad value.
            let piece = (1 << 16) * ty.block_bytes();
            src.par_chunks(piece)
                .enumerate()
                .filter_map(|(k, c)| {
                    non_finite_plain(ty, c).map(|(i, v)| (k * piece / ty.block_bytes() + i, v))
                })
                .min_by_key(|x| x.0)
        }
        _ if ty.is_quantized() => {
            let n = src.len() / ty.block_bytes() * ty.block_size();
            let values =
                crate::dequantize(ty, src, n).map_err(|e| QuantizeFileError::InvalidInput {
                    tensor: name.to_string(),
                    what: e.to_string(),
                })?;
            first_non_finite_par(&values).map(|i| (i, values[i]))
        }
        // Integer and f64 tensors are copied as they are.
        _ => None,
    };
    match bad {
        Some((i, v)) => Err(QuantizeFileError::InvalidInput {
            tensor: name.to_string(),
            what: non_finite_message(ty, first + i as u64, v),
        }),
        None => Ok(()),
    }
}

fn first_non_finite_par(values: &[f32]) -> Option<usize> {
    values
        .par_chunks(1 << 16)
        .enumerate()
        .find_first(|(_, c)| first_non_finite(c).is_some())
        .and_then(|(ci, c)| first_non_finite(c).map(|p| ci * (1 << 16) + p))
}

/// First NaN/Inf of an f32/f16/bf16 buffer, checked on the bits (no conversion).
fn non_finite_plain(ty: GgmlType, bytes: &[u8]) -> Option<(usize, f32)> {
    match ty {
        GgmlType::F32 => bytes.chunks_exact(4).enumerate().find_map(|(i, b)| {
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (!v.is_finite()).then_some((i, v))
        }),
        GgmlType::F16 => bytes.chunks_exact(2).enumerate().find_map(|(i, b)| {
            let h = u16::from_le_bytes([b[0], b[1]]);
            (h & 0x7c00 == 0x7c00).then(|| (i, crate::f16_bits_to_f32(h)))
        }),
        GgmlType::BF16 => bytes.chunks_exact(2).enumerate().find_map(|(i, b)| {
            let h = u16::from_le_bytes([b[0], b[1]]);
            (h & 0x7fff >= 0x7f80).then(|| (i, crate::bf16_bits_to_f32(h)))
        }),
        _ => None,
    }
}

/// Page-cache advice on the input mapping (see [`gguf::pages`]): `WillNeed` reads ahead,
/// `DontNeed` keeps the resident size at a few chunks instead of the whole input.
fn advise(bytes: &[u8], advice: Advice) {
    // SAFETY: every slice advised here is borrowed from the input GGUF's read-only file mapping
    // (`gguf::GgufFile`), never from heap memory.
    unsafe { gguf::pages::advise(bytes, advice) }
}

use gguf::pages::Advice;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_non_finite_detection_uses_the_bits() {
        let f16: Vec<u8> = [0x3c00u16, 0x7c00, 0x0001]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        assert_eq!(non_finite_plain(GgmlType::F16, &f16).map(|x| x.0), Some(1));
        let bf16: Vec<u8> = [0x3f80u16, 0x7f7f, 0xffc1]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        assert_eq!(
            non_finite_plain(GgmlType::BF16, &bf16).map(|x| x.0),
            Some(2)
        );
        let f32b: Vec<u8> = [1.0f32, f32::MAX]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(non_finite_plain(GgmlType::F32, &f32b), None);
    }

    #[test]
    fn first_non_finite_finds_the_first() {
        let mut v = vec![1.0f32; 1000];
        assert_eq!(first_non_finite(&v), None);
        v[700] = f32::NEG_INFINITY;
        v[999] = f32::NAN;
        assert_eq!(first_non_finite(&v), Some(700));
        assert_eq!(first_non_finite_par(&v), Some(700));
    }

    /// The scale check must name the element a full decode would: for random blocks whose f16
    /// fields are often NaN/Inf, compare with decoding and scanning.
    #[test]
    fn scale_check_equals_decoding() {
        use GgmlType::*;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for ty in [
            Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, IQ4_XS, Q1_0, Q2_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
            TQ1_0, TQ2_0,
        ] {
            let offsets = scale_offsets(ty).unwrap();
            let bb = ty.block_bytes();
            for round in 0..400 {
                let n_blocks = 1 + (next() % 6) as usize;
                let mut bytes: Vec<u8> = (0..n_blocks * bb).map(|_| next() as u8).collect();
                // Finite scales except, sometimes, one NaN/Inf field somewhere.
                for b in bytes.chunks_exact_mut(bb) {
                    for &o in offsets {
                        let h = (next() as u16) & 0x7bff; // exponent never all ones
                        b[o..o + 2].copy_from_slice(&h.to_le_bytes());
                    }
                }
                if round % 2 == 0 {
                    let blk = (next() as usize) % n_blocks;
                    let o = offsets[(next() as usize) % offsets.len()];
                    let h = 0x7c00 | (next() as u16 & 0x83ff);
                    bytes[blk * bb + o..blk * bb + o + 2].copy_from_slice(&h.to_le_bytes());
                }
                let n = n_blocks * ty.block_size();
                let decoded = crate::dequantize(ty, &bytes, n).unwrap();
                let want = first_non_finite(&decoded);
                let got = first_bad_output(ty, &bytes, &mut Vec::new()).map(|x| x.0);
                assert_eq!(got, want, "{ty} round {round}");
            }
        }
    }
}
