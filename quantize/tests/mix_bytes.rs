//! Byte identity with llama-quantize: every tensor's bytes, the header and the whole file, for
//! every preset of fixtures/quant-mix/ without an imatrix, with the GGUF imatrix and with the
//! legacy .dat imatrix, plus the option runs and requantizing.

mod mix_common;

use mix_common::{assert_identical, check_runs, Run};

fn plain(r: &Run) -> bool {
    r.args.len() == 1 && r.source_run.is_none()
}

fn with(suffix: &'static str) -> impl Fn(&Run) -> bool {
    move |r: &Run| r.name.ends_with(suffix) && r.name.matches('.').count() == 1
}

/// Everything else: --pure, type options, --tensor-type, --leave-output-tensor, requantizing, the
/// mismatched imatrix.
fn options(r: &Run) -> bool {
    !plain(r) && !with(".imatrix-gguf")(r) && !with(".imatrix-dat")(r)
}

macro_rules! bytes_test {
    ($name:ident, $model:literal, $what:literal, $select:expr) => {
        #[test]
        fn $name() {
            let (n, problems) = check_runs($model, $select);
            assert_identical($model, $what, n, &problems);
        }
    };
}

bytes_test!(dense_plain, "dense", "without imatrix", plain);
bytes_test!(
    dense_imatrix_gguf,
    "dense",
    "with the GGUF imatrix",
    with(".imatrix-gguf")
);
bytes_test!(
    dense_imatrix_dat,
    "dense",
    "with the legacy imatrix",
    with(".imatrix-dat")
);
bytes_test!(dense_options, "dense", "option runs", options);
bytes_test!(odd_plain, "odd", "without imatrix", plain);
bytes_test!(
    odd_imatrix_gguf,
    "odd",
    "with the GGUF imatrix",
    with(".imatrix-gguf")
);
bytes_test!(
    odd_imatrix_dat,
    "odd",
    "with the legacy imatrix",
    with(".imatrix-dat")
);
bytes_test!(moe_plain, "moe", "without imatrix", plain);
bytes_test!(
    moe_imatrix_gguf,
    "moe",
    "with the GGUF imatrix",
    with(".imatrix-gguf")
);
bytes_test!(
    moe_imatrix_dat,
    "moe",
    "with the legacy imatrix",
    with(".imatrix-dat")
);
