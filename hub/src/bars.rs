//! Terminal progress for [`crate::fetch`]: one bar per downloaded file, kept on screen when done
//! so the user sees what came from the network. indicatif hides the bars when stderr is not a
//! terminal (CI logs, pipes); notes are printed either way.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Progress;

/// Per-file progress bars on stderr.
pub struct ProgressBars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Default for ProgressBars {
    fn default() -> Self {
        ProgressBars::new()
    }
}

impl ProgressBars {
    pub fn new() -> ProgressBars {
        ProgressBars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{msg:<40!} [{bar:25}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
    }
}

impl Progress for ProgressBars {
    fn file_started(&self, file: &str, total: u64, done: u64) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        let bar = bars
            .entry(file.to_string())
            .or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(total));
                b.set_style(Self::style());
                b.set_message(file.to_string());
                b
            })
            .clone();
        bar.set_length(total);
        bar.set_position(done);
        if done > 0 {
            bar.set_message(format!("{file} (resumed)"));
        }
    }

    fn file_advanced(&self, file: &str, bytes: u64) {
        if let Some(b) = self.bars.lock().ok().and_then(|b| b.get(file).cloned()) {
            b.inc(bytes);
        }
    }

    fn file_finished(&self, file: &str, downloaded: bool) {
        if !downloaded {
            return;
        }
        if let Some(b) = self.bars.lock().ok().and_then(|b| b.get(file).cloned()) {
            b.finish();
        }
    }

    fn note(&self, text: &str) {
        self.multi.suspend(|| eprintln!("note: {text}"));
    }
}
