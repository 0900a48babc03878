//! `--plot`: one page of RTT plots, SVG or PNG, of the busiest host pairs (or the pairs named).
//!
//! Per pair, the page has RTT against capture time (one dot per sample, coloured by the rule that
//! made it, so that resent bytes timed by the TCP timestamp echo stand out) and the distribution
//! of the pair's samples (a CDF, with p50, p95 and p99 marked). The title names the capture and
//! its totals.
//!
//! It reads finished results only: the per-pair summaries (exact counts and the histograms'
//! percentiles, the same figures the table prints) and the samples [`points`] kept, thinned
//! within fixed bounds. Nothing here runs while packets are read.
//!
//! The output file is opened before any packet is read ([`PlotTarget::open`]), so that a path
//! that cannot be written fails at once. Pages are drawn with `plotters` in memory and written
//! whole; text uses a font compiled into metro (DejaVu Sans, see `assets/fonts/`), so drawing a
//! PNG needs no font on the machine.

mod page;
pub mod points;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::record::PairKey;
use crate::report::{Counters, PairSummary};
pub use page::{page_size, PAGE_WIDTH, PANEL_FILL};
pub use points::{PlotPoints, PointLimits};

/// How many of the busiest pairs a page shows unless told otherwise.
pub const DEFAULT_PAIRS: usize = 8;

/// The file formats a page is written in, chosen by the name's ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotFormat {
    /// `.svg`: vector, text as text.
    Svg,
    /// `.png`: a bitmap.
    Png,
}

impl PlotFormat {
    /// The format a file name asks for, if metro writes it.
    pub fn of(path: &Path) -> Option<PlotFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "svg" => Some(PlotFormat::Svg),
            "png" => Some(PlotFormat::Png),
            _ => None,
        }
    }
}

/// Why a page could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The name ends in neither `.svg` nor `.png`.
    #[error("--plot {0}: the name must end in .svg or .png (the format is chosen by it)")]
    Format(PathBuf),
    /// The file cannot be created or written.
    #[error(
        "cannot write the plot to {path}: {source}; give --plot a file in a directory that exists \
         and that you may write to"
    )]
    Unwritable {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Drawing failed (a bug, or the page is too large).
    #[error("cannot draw the plot {path}: {msg}")]
    Draw {
        /// The file.
        path: PathBuf,
        /// What the drawing library said.
        msg: String,
    },
}

/// Which pairs a page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairChoice {
    /// The `n` pairs with the most samples.
    Busiest(usize),
    /// These pairs, in this order.
    Named(Vec<PairKey>),
}

/// Everything a page shows.
pub struct PlotInput<'a> {
    /// What was captured: the file's name, or the interface's.
    pub source: &'a str,
    /// Every pair's summary.
    pub pairs: &'a [PairSummary],
    /// The run's counters.
    pub counters: &'a Counters,
    /// The kept samples.
    pub points: &'a PlotPoints,
    /// The pairs to show.
    pub choice: &'a PairChoice,
}

/// The output file, opened before the capture is read.
pub struct PlotTarget {
    path: PathBuf,
    format: PlotFormat,
    file: File,
    /// True when metro created the file (and so removes it if no page is written).
    created: bool,
}

impl PlotTarget {
    /// Checks the name and opens the file for writing, without truncating an existing one yet.
    pub fn open(path: &Path) -> Result<PlotTarget, PlotError> {
        let format = PlotFormat::of(path).ok_or_else(|| PlotError::Format(path.to_path_buf()))?;
        let unwritable = |source| PlotError::Unwritable {
            path: path.to_path_buf(),
            source,
        };
        let existed = path.exists();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(unwritable)?;
        Ok(PlotTarget {
            path: path.to_path_buf(),
            format,
            file,
            created: !existed,
        })
    }

    /// The file's name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Draws the page and writes it.
    pub fn write(mut self, input: &PlotInput<'_>) -> Result<(), PlotError> {
        let draw_error = |msg| PlotError::Draw {
            path: self.path.clone(),
            msg,
        };
        let bytes = match self.format {
            PlotFormat::Svg => page::svg(input).map_err(draw_error)?.into_bytes(),
            PlotFormat::Png => page::png(input).map_err(draw_error)?,
        };
        let written = self
            .file
            .set_len(0)
            .and_then(|()| self.file.write_all(&bytes));
        written.map_err(|source| PlotError::Unwritable {
            path: self.path.clone(),
            source,
        })
    }

    /// Gives up: removes the file if metro created it, so that no empty page is left behind.
    pub fn discard(self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The pairs a page shows, with their summaries (`None` for a named pair without samples).
fn chosen<'a>(
    pairs: &'a [PairSummary],
    choice: &PairChoice,
) -> Vec<(PairKey, Option<&'a PairSummary>)> {
    match choice {
        PairChoice::Busiest(n) => {
            // The `other` series (pairs beyond --max-pairs, together) is no pair to plot.
            let mut v: Vec<&PairSummary> = pairs.iter().filter(|p| !p.other).collect();
            // Ties go to the lower addresses, so that a page is the same on every run.
            v.sort_by(|a, b| {
                b.samples
                    .cmp(&a.samples)
                    .then((a.src, a.dst).cmp(&(b.src, b.dst)))
            });
            v.into_iter()
                .take(*n)
                .map(|p| (PairKey::hosts(p.src, p.dst), Some(p)))
                .collect()
        }
        PairChoice::Named(keys) => keys
            .iter()
            .map(|k| {
                let found = pairs
                    .iter()
                    .find(|p| !p.other && p.src == k.src && p.dst == k.dst);
                (*k, found)
            })
            .collect(),
    }
}
