//! Scalar float conversions exactly as ggml performs them.
//!
//! ggml-quants.c converts scales with the software routines of ggml-impl.h (never the CPU's
//! F16C instructions), so these are written as the same bit manipulations: any deviation in a
//! rounding corner (subnormals, overflow, NaN payloads) would change the bytes of a file.

/// f32 → IEEE half bits, round-to-nearest-even, overflow → ±Inf, NaN → 0x7E00 | sign.
///
/// This is ggml's `ggml_compute_fp32_to_fp16`: the value is scaled so that the f32 adder does
/// the rounding at the half-precision position, which also handles subnormal halves.
#[inline]
pub fn f32_to_f16_bits(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;

    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let mut bias = shl1_w & 0xFF00_0000;
    if bias < 0x7100_0000 {
        bias = 0x7100_0000;
    }

    #[allow(clippy::assign_op_pattern)] // operand order as in ggml-impl.h
    {
        base = f32::from_bits((bias >> 1) + 0x0780_0000) + base;
    }
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    let out = (sign >> 16)
        | if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign
        };
    out as u16
}

/// IEEE half bits → f32 (exact), as ggml's `ggml_compute_fp16_to_fp32`.
#[inline]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let w = (h as u32) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);

    let exp_offset = 0xE0u32 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 2^-112
    let normalized = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;

    let magic_mask = 126u32 << 23;
    let denormalized = f32::from_bits((two_w >> 17) | magic_mask) - 0.5;

    let cutoff = 1u32 << 27;
    let result = sign
        | if two_w < cutoff {
            denormalized.to_bits()
        } else {
            normalized.to_bits()
        };
    f32::from_bits(result)
}

/// f32 → bfloat16 bits as ggml's `ggml_compute_fp32_to_bf16`: round-to-nearest-even on the
/// raw bits (no flush of subnormals), NaN → `(bits >> 16) | 0x40` (forced quiet).
#[inline]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// bfloat16 bits → f32 (exact).
#[inline]
pub fn bf16_bits_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// E8M0 exponent byte → 2^(e−128), i.e. half of the E8M0 value (`GGML_E8M0_TO_FP32_HALF`);
/// MXFP4's value table is doubled, so this is the factor it multiplies by.
#[inline]
pub(crate) fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        ((e as u32) - 1) << 23
    };
    f32::from_bits(bits)
}

/// UE4M3 (unsigned, 4 exponent bits with bias 7, 3 mantissa bits) → f32 × 0.5
/// (`ggml_ue4m3_to_fp32`; halved for the same doubled-table reason as E8M0). 0 and 0x7F are 0.
#[inline]
pub(crate) fn ue4m3_to_f32(x: u8) -> f32 {
    if x == 0 || x == 0x7F {
        return 0.0;
    }
    let exp = ((x >> 3) & 0xF) as i32;
    let man = (x & 0x7) as i32;
    // Both branches are exact in f32, so plain scaling by powers of two reproduces ldexpf.
    let raw = if exp == 0 {
        man as f32 * pow2(-9)
    } else {
        (1.0 + man as f32 / 8.0) * pow2(exp - 7)
    };
    raw * 0.5
}

/// Exact 2^e for the small exponents UE4M3 needs (−9..=8).
#[inline]
fn pow2(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

/// f32 → UE4M3 as `ggml_fp32_to_ue4m3`: non-positive → 0, clamp to 448, round half up on the
/// first dropped mantissa bit, saturate to 0x7E.
#[inline]
pub(crate) fn f32_to_ue4m3(x: f32) -> u8 {
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    if !(x > 0.0) {
        return 0;
    }
    let x = if x > 448.0 { 448.0 } else { x };
    let bits = x.to_bits();
    let fp32_exp = ((bits >> 23) & 0xFF) as i32 - 127;
    let fp32_man = ((bits >> 20) & 0x7) as i32;
    let mut exp = fp32_exp + 7;
    if exp <= 0 {
        let man = c_trunc_i32(x * 512.0 + 0.5).min(7);
        if man < 1 {
            return 0;
        }
        return man as u8;
    }
    if exp >= 15 {
        return 0x7E;
    }
    let round_bit = ((bits >> 19) & 1) as i32;
    let mut man = fp32_man + round_bit;
    if man > 7 {
        man = 0;
        exp += 1;
        if exp >= 15 {
            return 0x7E;
        }
    }
    ((exp << 3) | man) as u8
}

/// C's float → int conversion as x86-64 performs it (`cvttss2si`): truncation toward zero, and
/// the "integer indefinite" value `i32::MIN` for NaN or anything outside the i32 range.
///
/// ggml casts floats straight to `int8_t`/`uint8_t`/`int`; the compiler emits this instruction and
/// keeps the low bits. Rust's `as` saturates instead, which differs for the degenerate blocks
/// (a scale that overflowed to ±Inf), so the C behaviour is spelled out here.
#[inline]
pub(crate) fn c_trunc_i32(f: f32) -> i32 {
    if (-2147483648.0..2147483648.0).contains(&f) {
        f as i32
    } else {
        i32::MIN
    }
}

/// glibc `lroundf` on x86-64: round half away from zero; NaN and out-of-range → `i64::MIN`.
#[inline]
pub(crate) fn c_lroundf(f: f32) -> i64 {
    if (-9.223372e18..9.223372e18).contains(&f) {
        f.round() as i64
    } else {
        i64::MIN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trips_every_half() {
        for h in 0..=u16::MAX {
            let f = f16_bits_to_f32(h);
            if f.is_nan() {
                // ggml canonicalises every NaN to the quiet 0x7E00 (keeping the sign).
                assert_eq!(f32_to_f16_bits(f), 0x7E00 | (h & 0x8000));
            } else {
                assert_eq!(f32_to_f16_bits(f), h, "half {h:#06x}");
            }
        }
    }

    #[test]
    fn f16_rounding_corners() {
        assert_eq!(f32_to_f16_bits(65504.0), 0x7BFF);
        // Halfway between 65504 and 65536 rounds to even, i.e. up to Inf.
        assert_eq!(f32_to_f16_bits(65520.0), 0x7C00);
        assert_eq!(f32_to_f16_bits(65519.996), 0x7BFF);
        assert_eq!(f32_to_f16_bits(-1e9), 0xFC00);
        assert_eq!(f32_to_f16_bits(f32::INFINITY), 0x7C00);
        // Smallest subnormal half is 2^-24; half of it ties to even (zero).
        assert_eq!(f32_to_f16_bits(2f32.powi(-24)), 0x0001);
        assert_eq!(f32_to_f16_bits(2f32.powi(-25)), 0x0000);
        assert_eq!(f32_to_f16_bits(1.5 * 2f32.powi(-25)), 0x0001);
        assert_eq!(f32_to_f16_bits(-0.0), 0x8000);
        assert_eq!(f32_to_f16_bits(f32::from_bits(0x7FC0_1234)), 0x7E00);
        assert_eq!(f32_to_f16_bits(f32::from_bits(0xFF80_0001)), 0xFE00);
    }

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 is a tie: round to even (down); 1 + 3·2^-8 ties up.
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3F80_8000)), 0x3F80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7F80_0001)), 0x7FC0);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0xFF81_2345)), 0xFFC1);
        // Largest finite f32 rounds up to Inf, like ggml.
        assert_eq!(f32_to_bf16_bits(f32::MAX), 0x7F80);
        // Subnormals are kept.
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x0001_8000)), 0x0002);
    }

    #[test]
    fn c_conversions() {
        assert_eq!(c_trunc_i32(-2.7), -2);
        assert_eq!(c_trunc_i32(f32::NAN), i32::MIN);
        assert_eq!(c_trunc_i32(f32::INFINITY), i32::MIN);
        assert_eq!(c_trunc_i32(3e9), i32::MIN);
        assert_eq!(c_lroundf(2.5), 3);
        assert_eq!(c_lroundf(-2.5), -3);
        assert_eq!(c_lroundf(f32::NAN), i64::MIN);
    }

    #[test]
    fn small_float_formats() {
        assert_eq!(e8m0_to_f32_half(127), 0.5);
        assert_eq!(e8m0_to_f32_half(0), 2f32.powi(-128));
        assert_eq!(e8m0_to_f32_half(1), 2f32.powi(-127));
        for x in 1..0x78u8 {
            // Every code below exponent 15 converts back to itself (ggml saturates exponent 15
            // straight to 0x7E, so 0x78..=0x7D are never produced).
            assert_eq!(f32_to_ue4m3(ue4m3_to_f32(x) * 2.0), x, "code {x:#04x}");
        }
        assert_eq!(f32_to_ue4m3(1e9), 0x7E);
        assert_eq!(f32_to_ue4m3(-1.0), 0);
    }
}
