//! Size labels and the default file name (gguf-py `utility.py`: `size_label`,
//! `model_weight_count_rounded_notation`, `naming_convention`, `fill_templated_filename`).

use super::pystr;

/// `model_weight_count_rounded_notation`: the count scaled to K/M/B/T with at least
/// `min_digits` significant digits ("135M", "7.2B", "1.0K", "0.00K").
pub(crate) fn rounded_notation(count: u64, min_digits: usize) -> String {
    // Python compares the int with float literals exactly; below 2^53 the f64 conversion is exact
    // and parameter counts stay far below that.
    let n = count as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    // `len(str(round(scaled)).lstrip('0'))`: Python's round() ties to even; 0 has no digits left.
    let rounded = scaled.round_ties_even() as u64;
    let digits = if rounded == 0 {
        0
    } else {
        rounded.to_string().len()
    };
    let fix = min_digits.saturating_sub(digits);
    // Rust's fixed-precision formatting rounds the exact binary value half-to-even, like
    // Python's `f"{x:.{fix}f}"`.
    format!("{scaled:.fix$}{suffix}")
}

/// `gguf.size_label(total, shared, expert, expert_count)`: "8x7.2B" for MoE models, else the
/// rounded total.
pub(crate) fn size_label(total: u64, shared: u64, expert: u64, expert_count: u64) -> String {
    if expert_count > 0 {
        format!("{expert_count}x{}", rounded_notation(shared + expert, 2))
    } else {
        rounded_notation(total, 2)
    }
}

/// `gguf.naming_convention(...)` without the LoRA/vocab kinds, which ggforge never writes:
/// `<Basename-or-Name>[-<SizeLabel>][-<Finetune>][-<Version>]-<OUTTYPE>`.
pub(crate) fn naming_convention(
    model_name: Option<&str>,
    base_name: Option<&str>,
    finetune: Option<&str>,
    version: Option<&str>,
    size_label: Option<&str>,
    output_type: &str,
) -> String {
    let dashed = |s: &str| pystr::strip(s).replace(' ', "-");
    let name = match (base_name, model_name) {
        (Some(b), _) => dashed(b).replace('/', "-"),
        (None, Some(m)) => dashed(m).replace('/', "-"),
        (None, None) => "ggml-model".to_owned(),
    };
    let mut out = name;
    if let Some(s) = size_label {
        out.push('-');
        out.push_str(s);
    }
    for part in [finetune, version].into_iter().flatten() {
        out.push('-');
        out.push_str(&dashed(part));
    }
    out.push('-');
    out.push_str(&dashed(output_type).to_uppercase());
    out
}

/// Python's `filename.format(lower, outtype=lower, ftype=lower, OUTTYPE=upper, FTYPE=upper)`.
///
/// Supported: `{ftype}`, `{outtype}`, `{FTYPE}`, `{OUTTYPE}`, `{}` / `{0}` (lowercase type),
/// `{{` and `}}`. Where Python would raise (an unknown field, a lone brace, a second `{}`) or
/// apply a format spec / conversion (`{ftype:>8}`, `{ftype!r}`), the text is kept unchanged:
/// a slightly odd file name is more useful than refusing to write.
pub(crate) fn fill_templated_filename(name: &str, output_type: &str) -> String {
    let lower = output_type.to_lowercase();
    let upper = output_type.to_uppercase();
    let mut out = String::with_capacity(name.len() + 8);
    let mut rest = name;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if let Some(after) = tail.strip_prefix('}') {
            out.push('}');
            rest = after;
            continue;
        }
        match tail[1..].find(['{', '}']) {
            Some(end) if tail.as_bytes()[1 + end] == b'}' => {
                let field = &tail[1..1 + end];
                let value = match field {
                    "" | "0" | "ftype" | "outtype" => Some(lower.as_str()),
                    "FTYPE" | "OUTTYPE" => Some(upper.as_str()),
                    _ => None,
                };
                match value {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&tail[..end + 2]),
                }
                rest = &tail[end + 2..];
            }
            _ => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values from gguf-py (llama.cpp in llama-cpp-python 0.3.36).
    #[test]
    fn size_labels() {
        assert_eq!(size_label(134_515_008, 134_515_008, 0, 0), "135M");
        assert_eq!(size_label(0, 0, 0, 0), "0.00K");
        assert_eq!(size_label(999_999, 999_999, 0, 0), "1000K");
        assert_eq!(size_label(12_500, 12_500, 0, 0), "12K");
        assert_eq!(
            size_label(46_702_792_704, 1_637_228_544, 5_637_144_576, 8),
            "8x7.3B"
        );
    }

    #[test]
    fn fixture_size_labels_and_names_match_gguf_py() {
        let units = crate::general::units_fixture();
        let sizes = units["size_label"].as_array().cloned().unwrap_or_default();
        assert!(sizes.len() > 20);
        for case in &sizes {
            let a: Vec<u64> = case[0]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_i64())
                        .map(i64::unsigned_abs)
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(
                size_label(a[0], a[1], a[2], a[3]),
                case[1].as_str().unwrap_or_default(),
                "{case}"
            );
        }
        let names = units["naming_convention"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(names.len() >= 5);
        for case in &names {
            let a: Vec<Option<&str>> = case[0]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_str()).collect())
                .unwrap_or_default();
            let got = naming_convention(a[0], a[1], a[2], a[3], a[4], a[5].unwrap_or_default());
            assert_eq!(got, case[1].as_str().unwrap_or_default(), "{case}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            naming_convention(
                Some("SmolLM2 135M Instruct"),
                Some("SmolLM2"),
                Some("Instruct"),
                None,
                Some("135M"),
                "F16"
            ),
            "SmolLM2-135M-Instruct-F16"
        );
        assert_eq!(
            naming_convention(
                Some("org/model name"),
                None,
                Some("my tune"),
                Some("v 2"),
                None,
                "q8_0"
            ),
            "org-model-name-my-tune-v-2-Q8_0"
        );
        assert_eq!(
            naming_convention(None, None, None, None, None, "BF16"),
            "ggml-model-BF16"
        );
    }

    #[test]
    fn templates() {
        assert_eq!(
            fill_templated_filename("model-{ftype}.gguf", "F16"),
            "model-f16.gguf"
        );
        assert_eq!(
            fill_templated_filename("{outtype}-{OUTTYPE}-{}.gguf", "BF16"),
            "bf16-BF16-bf16.gguf"
        );
        assert_eq!(
            fill_templated_filename("a{{b}}-{FTYPE}.gguf", "q4_k_m"),
            "a{b}-Q4_K_M.gguf"
        );
        // Python raises on these; ggforge keeps the text.
        assert_eq!(
            fill_templated_filename("x-{name}-{ftype}.gguf", "F16"),
            "x-{name}-f16.gguf"
        );
        assert_eq!(
            fill_templated_filename("x-{-}-{ftype", "F16"),
            "x-{-}-{ftype"
        );
    }
}
