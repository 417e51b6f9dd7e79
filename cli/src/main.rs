//! `ggforge`: Hugging Face → GGUF conversion, inspection and (soon) quantization and verification.
//!
//! Exit codes: 0 success; 1 the operation failed (I/O, conversion); 2 the input was unusable
//! (bad arguments, malformed or hostile file); 130 interrupted by a signal.

mod convert_cmd;
mod diff_cmd;
mod inspect;
mod quantize_cmd;
mod verify_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ggforge",
    version,
    about = "Convert Hugging Face models to GGUF, byte-identical to llama.cpp"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face model folder to GGUF.
    Convert(convert_cmd::Args),
    /// Print a GGUF model's metadata and tensor table (any shard of a split model shows it whole).
    Inspect(inspect::Args),
    /// Compare two GGUF models (metadata and tensor bytes; split models whole); exit 1 when they differ.
    Diff(diff_cmd::Args),
    /// Quantize a GGUF file like llama-quantize (same presets, same type choices, same bytes).
    Quantize(quantize_cmd::Args),
    /// Verify a GGUF file: structure, tokenizer and logits against a reference.
    Verify(verify_cmd::Args),
}

/// A failure with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn input(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// Writes to stdout; a closed pipe (`ggforge inspect f | head`) is not an error.
pub fn print_stdout(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::failed(format!("writing to stdout: {e}"))),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ctrl-C / SIGTERM: ask writers to stop; their temporary files are removed on the way out.
    let _ = ctrlc::set_handler(gguf::atomic::request_interrupt);
    let result = match cli.command {
        Command::Convert(args) => convert_cmd::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Diff(args) => diff_cmd::run(args),
        Command::Quantize(args) => quantize_cmd::run(args),
        Command::Verify(args) => verify_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            let code = if gguf::atomic::interrupt_requested() {
                130
            } else {
                f.code
            };
            ExitCode::from(code)
        }
    }
}
