//! A seeded generator of random valid GGUF files and random mutations of them, shared by the
//! property tests. Hand-rolled (SplitMix64) to keep the dev-dependency tree empty; every failure
//! message carries the seed, so a case can be replayed exactly.

#![allow(dead_code)]

use gguf::writer::GgufWriter;
use gguf::{Array, GgmlType, Metadata, TensorDesc, Value};

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A float that is not NaN (NaN != NaN would make equality checks meaningless).
    pub fn f32(&mut self) -> f32 {
        let f = f32::from_bits(self.next() as u32);
        if f.is_nan() {
            0.5
        } else {
            f
        }
    }

    pub fn f64(&mut self) -> f64 {
        let f = f64::from_bits(self.next());
        if f.is_nan() {
            -0.25
        } else {
            f
        }
    }

    pub fn string(&mut self, max_len: u64) -> String {
        const PARTS: [&str; 8] = ["a", "Z", "0", " ", "é", "▁", "日本", "🦙"];
        let n = self.below(max_len + 1);
        (0..n).map(|_| *self.pick(&PARTS)).collect()
    }
}

fn array(rng: &mut Rng) -> Array {
    let n = rng.below(12) as usize;
    macro_rules! fill {
        ($e:expr) => {
            (0..n).map(|_| $e).collect()
        };
    }
    match rng.below(12) {
        0 => Array::U8(fill!(rng.next() as u8)),
        1 => Array::I8(fill!(rng.next() as i8)),
        2 => Array::U16(fill!(rng.next() as u16)),
        3 => Array::I16(fill!(rng.next() as i16)),
        4 => Array::U32(fill!(rng.next() as u32)),
        5 => Array::I32(fill!(rng.next() as i32)),
        6 => Array::F32(fill!(rng.f32())),
        7 => Array::Bool(fill!(rng.chance(50))),
        8 => Array::String(fill!(rng.string(6))),
        9 => Array::U64(fill!(rng.next())),
        10 => Array::I64(fill!(rng.next() as i64)),
        _ => Array::F64(fill!(rng.f64())),
    }
}

fn value(rng: &mut Rng) -> Value {
    match rng.below(13) {
        0 => Value::U8(rng.next() as u8),
        1 => Value::I8(rng.next() as i8),
        2 => Value::U16(rng.next() as u16),
        3 => Value::I16(rng.next() as i16),
        4 => Value::U32(rng.next() as u32),
        5 => Value::I32(rng.next() as i32),
        6 => Value::F32(rng.f32()),
        7 => Value::Bool(rng.chance(50)),
        8 => Value::String(rng.string(20)),
        9 => Value::Array(array(rng)),
        10 => Value::U64(rng.next()),
        11 => Value::I64(rng.next() as i64),
        _ => Value::F64(rng.f64()),
    }
}

/// A valid file's contents: metadata, tensor descriptions and their bytes.
pub struct Model {
    pub metadata: Metadata,
    pub tensors: Vec<(TensorDesc, Vec<u8>)>,
}

pub fn model(rng: &mut Rng) -> Model {
    let mut metadata = Metadata::new();
    metadata.set("general.architecture", "llama");
    if rng.chance(40) {
        let a = 1u32 << rng.below(9);
        metadata.set("general.alignment", a);
    }
    for i in 0..rng.below(10) {
        metadata.set(format!("x{i}.{}", rng.string(8)), value(rng));
    }
    if rng.chance(40) {
        let n = 1 + rng.below(40) as usize;
        let tokens: Vec<String> = (0..n).map(|i| format!("{i}{}", rng.string(4))).collect();
        metadata.set("tokenizer.ggml.model", "gpt2");
        metadata.set("tokenizer.ggml.tokens", Array::String(tokens));
        metadata.set(
            "tokenizer.ggml.scores",
            Array::F32((0..n).map(|_| rng.f32()).collect()),
        );
        metadata.set(
            "tokenizer.ggml.token_type",
            Array::I32((0..n).map(|_| rng.below(7) as i32).collect()),
        );
        metadata.set(
            "tokenizer.ggml.merges",
            Array::String((0..rng.below(5)).map(|_| rng.string(5)).collect()),
        );
        metadata.set("tokenizer.ggml.bos_token_id", rng.below(n as u64) as u32);
        metadata.set("tokenizer.ggml.eos_token_id", rng.below(n as u64) as u32);
        metadata.set("tokenizer.ggml.add_bos_token", rng.chance(50));
    }
    let mut tensors = Vec::new();
    for i in 0..rng.below(7) {
        let ty = *rng.pick(&GgmlType::ALL);
        let n_dims = 1 + rng.below(4) as usize;
        let mut dims = vec![ty.block_size() as u64 * (1 + rng.below(3))];
        for _ in 1..n_dims {
            dims.push(1 + rng.below(3));
        }
        let desc = TensorDesc::new(format!("blk.{i}.{}", rng.below(1000)), dims, ty);
        let n = desc.info(0).n_bytes() as usize;
        let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        tensors.push((desc, bytes));
    }
    Model { metadata, tensors }
}

/// Serializes a model with ggforge's streaming writer.
pub fn write(m: &Model) -> Vec<u8> {
    let descs: Vec<TensorDesc> = m.tensors.iter().map(|(d, _)| d.clone()).collect();
    let mut w = GgufWriter::new(Vec::new(), &m.metadata, &descs).expect("valid model");
    for (d, bytes) in &m.tensors {
        w.write_tensor(&d.name, bytes).expect("in order");
    }
    w.finish().expect("all written")
}

/// Interesting 64-bit values for overwriting counts, lengths, dims and offsets.
const INTERESTING: [u64; 12] = [
    0,
    1,
    2,
    31,
    32,
    0x7F,
    0xFFFF_FFFF,
    1 << 31,
    1 << 32,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX,
];

/// Applies 1 to 4 random mutations.
pub fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            b.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(b.len() as u64) as usize;
        match rng.below(7) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = rng.next() as u8,
            2 => {
                let v = rng.pick(&INTERESTING).to_le_bytes();
                let width = if rng.chance(50) { 8 } else { 4 };
                for (k, byte) in v.iter().take(width).enumerate() {
                    if let Some(slot) = b.get_mut(at + k) {
                        *slot = *byte;
                    }
                }
            }
            3 => b.truncate(at),
            4 => {
                let n = rng.below(16) as usize;
                let ins: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(at..at, ins);
            }
            5 => {
                let end = (at + rng.below(32) as usize).min(b.len());
                b.drain(at..end);
            }
            _ => {
                // Small deltas to a length or count field.
                let d = rng.below(5) as u8;
                b[at] = if rng.chance(50) {
                    b[at].wrapping_add(d)
                } else {
                    b[at].wrapping_sub(d)
                };
            }
        }
    }
    b
}
